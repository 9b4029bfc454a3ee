"""The opt-in compilation: a compiled run in this process, the rollout compiled by region and the compiled step against eager."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from cvae_dist.config import PRESETS, ModelConfig
from cvae_dist.errors import UserError
from cvae_dist.loss import cvae_loss
from cvae_dist.model import CVAE
from support import make_loop


def rollout_loss_and_grads(model: CVAE, window: int, teacher_forcing, recompute: bool = False):
    """The loss of a training rollout of a random window of `window` frames (seed 1), and its gradients."""
    generator = torch.Generator().manual_seed(1)
    frames, labels = (torch.rand(2, window, 3, 32, 64, generator=generator) for _ in range(2))
    noise = torch.randn(2, window - 1, PRESETS["tiny"]["N_dim"], 32, 64, generator=generator)
    out = model(frames, labels, noise, teacher_forcing, recompute=recompute)
    loss = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, beta=0.5).total
    return loss, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.slow  # compiles the regions three times
@pytest.mark.parametrize("teacher_forcing", ["on", "off", "per frame"])
def test_the_rollout_compiled_by_region_computes_what_eager_does_and_compiles_once_whatever_the_window(teacher_forcing):
    # aot_eager traces through dynamo and AOTAutograd as inductor does, without minutes of C++ codegen on a CPU.
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"])).to(memory_format=torch.channels_last)
    forced = {"on": True, "off": False, "per frame": torch.tensor([[True, False, True, False]] * 2)}[teacher_forcing]
    loss, grads = rollout_loss_and_grads(model, 5, forced)
    torch._dynamo.reset()
    counters.clear()
    model.compile_training_calls(backend="aot_eager")
    compiled_loss, compiled_grads = rollout_loss_and_grads(model, 5, forced)
    # The same aten ops in the same order: the same loss. The gradients are the same bits in a fresh
    # process, but not always after other tests have run in it (the suite's workers): within rounding.
    assert torch.equal(compiled_loss, loss)
    for grad, reference in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(grad, reference, atol=1e-6, rtol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    # Teacher forcing on: the encoders, the posterior and the batched decoding; otherwise the
    # autoregressive step and the last frame's decoding too, each compiled once for the window.
    assert graphs == (4 if forced is True else 5)
    # Inference calls the methods themselves, which stay eager.
    with torch.no_grad():
        model.eval().decode(*(torch.rand(1, c, 32, 64) for c in (16, 8, 4)))
    assert counters["stats"]["unique_graphs"] == graphs
    # A run of windows twice as long compiles as many graphs: the step is replayed, not unrolled.
    torch._dynamo.reset()
    counters.clear()
    rollout_loss_and_grads(model.train(), 9, forced if forced is True else False)
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow  # compiles, then trains, validates and evaluates
def test_a_compiled_recomputing_run_saves_the_course_key_names(tmp_path):
    # In this process: a run's whole path (steps, validation, checkpoints, best weights, evaluation) compiled.
    loop = make_loop(tmp_path, "--compile", "--compile_backend", "eager", "--activation_checkpointing")
    loop.fit()
    weights = load_file(tmp_path / "best" / "model.safetensors")
    # The compiled module's wrapper would prefix every key with `_orig_mod.`; the course's code could not load that.
    assert set(weights) == set(CVAE(ModelConfig(**PRESETS["tiny"])).state_dict())
    assert all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.slow  # compiles twice
@pytest.mark.parametrize(
    "flags",
    [["--tfr", "1"], ["--tfr", "0"], ["--tfr", "0", "--compile_scope", "region", "--recompute_activations"]],
    ids=["tf-on", "tf-off", "tf-off-by-region-recomputed"],
)
def test_the_training_step_compiles_under_accelerate_with_bf16_autocast_and_steps_as_eager(flags, tmp_path):
    # fullgraph=True (as --compile compiles, whole or by region): a graph break anywhere would fail here. A
    # recomputed frame calls its compiled region again in the backward pass, under the autocast checkpointing restores.
    steps = []
    for compiled in (False, True):
        flags = [*flags, "--mixed_precision", "bf16", *(["--compile", "--compile_backend", "aot_eager"] if compiled else [])]
        loop = make_loop(tmp_path / f"compiled-{compiled}", *flags)
        assert loop.parts.precision.dtype == torch.bfloat16
        frames, labels, windows = next(iter(loop.parts.loader))
        steps.append([loop.train_batch(frames, labels, windows) for _ in range(2)])
    for eager, compiled in zip(*steps):
        # bf16 rounds each op's output to 8 bits of mantissa, and a traced graph may order its float32 sums differently.
        torch.testing.assert_close(compiled.loss, eager.loss, rtol=2e-2, atol=0)
        torch.testing.assert_close(compiled.grad_norm, eager.grad_norm, rtol=5e-2, atol=0)


def test_a_rollout_compiled_whole_cannot_recompute_under_autocast_and_says_what_can(tmp_path):
    with pytest.raises(UserError) as refused:
        make_loop(tmp_path, "--compile", "--recompute_activations", "--mixed_precision", "bf16")
    assert str(refused.value).startswith("--compile with --recompute_activations under --mixed_precision bf16 needs --compile_scope region")
