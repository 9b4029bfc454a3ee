"""The opt-in compilation: a compiled run in this process, the compiled rollout and step against eager, a refused combination."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cvae_dist.config import PRESETS, ModelConfig
from cvae_dist.loss import cvae_loss
from cvae_dist.model import CVAE
from support import REPO, make_loop, run_env, tiny_args


@pytest.mark.slow  # compiles twice
@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_compiled_rollout_matches_eager(teacher_forcing):
    # aot_eager traces through dynamo and AOTAutograd as inductor does, without minutes of C++ codegen on a CPU.
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"])).to(memory_format=torch.channels_last)
    frames, labels = torch.rand(2, 3, 3, 32, 64), torch.rand(2, 3, 3, 32, 64)  # 3 frames: tracing cost grows with the window
    noise = torch.randn(2, 2, PRESETS["tiny"]["N_dim"], 32, 64)
    results = []
    for compiled in (False, True):
        if compiled:
            model.compile(backend="aot_eager", fullgraph=True)  # fullgraph: a graph break would fail here
        out = model(frames, labels, noise, teacher_forcing)
        loss = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, beta=0.5).total
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    (loss, grads), (loss_compiled, grads_compiled) = results
    torch.testing.assert_close(loss_compiled, loss)
    for grad, reference in zip(grads_compiled, grads):
        torch.testing.assert_close(grad, reference, atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # compiles, then trains, validates and evaluates
def test_a_compiled_recomputing_run_saves_the_course_key_names(tmp_path):
    # In this process: a run's whole path (steps, validation, checkpoints, best weights, evaluation) compiled.
    loop = make_loop(tmp_path, "--compile", "--compile_backend", "eager", "--activation_checkpointing")
    loop.fit()
    weights = load_file(tmp_path / "best" / "model.safetensors")
    # The compiled module's wrapper would prefix every key with `_orig_mod.`; the course's code could not load that.
    assert set(weights) == set(CVAE(ModelConfig(**PRESETS["tiny"])).state_dict())
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_compile_with_checkpointing_under_autocast_is_refused_in_one_line(dataset_root, tmp_path):
    args = tiny_args(dataset_root, tmp_path / "r", "--compile", "--activation_checkpointing", "--mixed_precision", "bf16")
    result = subprocess.run([sys.executable, str(REPO / "cvae_dist" / "train.py"), *args], env=run_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --compile with --activation_checkpointing needs --mixed_precision no")


@pytest.mark.slow  # compiles twice
@pytest.mark.parametrize("tfr", ["1", "0"])
def test_the_training_step_compiles_whole_under_accelerate_with_bf16_autocast_and_steps_as_eager(tfr, tmp_path):
    # fullgraph=True (as --compile compiles): a graph break anywhere in the step's forward would fail here.
    steps = []
    for compiled in (False, True):
        flags = ["--mixed_precision", "bf16", "--tfr", tfr, *(["--compile", "--compile_backend", "aot_eager"] if compiled else [])]
        loop = make_loop(tmp_path / f"compiled-{compiled}", *flags)
        assert loop.parts.precision.dtype == torch.bfloat16
        frames, labels, windows = next(iter(loop.parts.loader))
        steps.append([loop.train_batch(frames, labels, windows) for _ in range(2)])
    for eager, compiled in zip(*steps):
        # bf16 rounds each op's output to 8 bits of mantissa, and a traced graph may order its float32 sums differently.
        torch.testing.assert_close(compiled.loss, eager.loss, rtol=2e-2, atol=0)
        torch.testing.assert_close(compiled.grad_norm, eager.grad_norm, rtol=5e-2, atol=0)
