"""The non-finite guard in the training loop, in this process: with fp16's loss scaler, and on the device
path of a fused optimizer, where a step never waits for the host."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from accelerate.optimizer import AcceleratedOptimizer
from torch.overrides import TorchFunctionMode

from cvae_dist.errors import UserError
from cvae_dist.training import Loop
from cvae_dist.training.precision import Precision
from support import make_loop

# Tensor methods that make the host wait for the device.
HOST_READS = {"__bool__", "item", "tolist", "__float__", "__int__"}


def weights(loop: Loop) -> dict[str, torch.Tensor]:
    """The parameters (not BatchNorm's statistics, which every forward pass moves)."""
    return {k: v.detach().clone() for k, v in loop.accelerator.unwrap_model(loop.model).named_parameters()}


def changed(before: dict[str, torch.Tensor], loop: Loop) -> bool:
    return any(not torch.equal(before[k], v) for k, v in weights(loop).items())


def with_loss_scaler(loop: Loop, scaler: torch.amp.GradScaler) -> Loop:
    """The loop as `--mixed_precision fp16` builds it on a GPU: Accelerate makes no GradScaler on a CPU
    (fp16 autocast does nothing there, it says), so the real scaler and autocast are handed over here."""
    loop.accelerator.native_amp = True
    loop.accelerator.scaler = scaler
    loop.optimizer = AcceleratedOptimizer(loop.optimizer.optimizer, device_placement=False, scaler=scaler)
    loop.parts = dataclasses.replace(loop.parts, precision=Precision("cpu", torch.float16))
    return loop


def test_an_fp16_step_that_overflows_is_skipped_by_the_scaler_counted_by_the_guard_and_the_next_one_taken(tmp_path, capsys):
    # (Fused, the default: GradScaler hands the fused Adam its found_inf and scale, as on a GPU.)
    # 2^127 overflows any gradient above 2 in float32; the back-off then leaves 2^10, at which this net fits fp16.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-117, growth_interval=1000)
    loop = with_loss_scaler(make_loop(tmp_path, "--mixed_precision", "fp16", "--max_nonfinite_steps", "2"), scaler)
    assert loop.guard.on_device is False  # the scaler decides about the step: the guard asks on the host
    frames, labels, windows = next(iter(loop.parts.loader))

    before = weights(loop)
    first = loop.train_batch(frames, labels, windows)
    assert not torch.isfinite(first.grad_norm)
    # (Accelerate's step_was_skipped stays False here: GradScaler calls a fused optimizer's step even to skip it.)
    assert not changed(before, loop)
    assert scaler.get_scale() == 2.0**10
    assert (loop.state.nonfinite_steps, loop.state.nonfinite_streak) == (1, 1)
    assert "warning: step 1: non-finite loss or gradient, step skipped (1 in a row) (the loss scaler lowers its scale)" in capsys.readouterr().err
    for state in loop.optimizer.optimizer.state.values():  # the fused Adam made its state, and left it at zero
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()

    loop.state.step += 1  # as the loop counts the optimizer step it tried
    second = loop.train_batch(frames, labels, windows)
    assert torch.isfinite(second.grad_norm) and torch.isfinite(second.loss)
    assert changed(before, loop)
    assert scaler.get_scale() == 2.0**10
    assert (loop.state.nonfinite_steps, loop.state.nonfinite_streak) == (1, 0)
    assert "step skipped" not in capsys.readouterr().err


def test_without_the_guard_an_fp16_step_the_scaler_skips_is_no_update_of_the_weight_average(tmp_path):
    # Accelerate's optimizer_step_was_skipped stays False for the fused Adam: the average must learn it from the scale.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-117, growth_interval=1000)
    loop = with_loss_scaler(make_loop(tmp_path, "--mixed_precision", "fp16", "--no-skip_nonfinite", "--use_ema"), scaler)
    frames, labels, windows = next(iter(loop.parts.loader))
    before = weights(loop)
    loop.train_batch(frames, labels, windows)
    assert not changed(before, loop) and scaler.get_scale() == 2.0**10
    assert loop.average.updates == 0
    loop.train_batch(frames, labels, windows)
    assert changed(before, loop) and loop.average.updates == 1


class HostReads(TorchFunctionMode):
    """Records the tensor methods called in its block that make the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def foreach(monkeypatch):
    """Loops built with torch's foreach Adam, which cannot skip a step itself (the default is the fused one)."""
    build = importlib.import_module("cvae_dist.training.build")  # the module, which the package's `build` function hides
    make_optimizer = build.make_optimizer
    monkeypatch.setattr(build, "make_optimizer", lambda *args, **kwargs: make_optimizer(*args, **kwargs, flavour="foreach"))


@pytest.mark.parametrize("device_path", [False, True])
def test_a_step_on_the_device_path_never_waits_for_the_host_and_the_other_path_does(device_path, request, tmp_path):
    if not device_path:
        request.getfixturevalue("foreach")
    loop = make_loop(tmp_path)
    assert loop.guard.on_device is device_path
    frames, labels, windows = next(iter(loop.parts.loader))
    with HostReads() as reads:
        loop.train_batch(frames, labels, windows)
    # (foreach Adam reads its step counts, kept on the CPU, with item(): no wait for a device)
    assert reads.seen == [] if device_path else "__bool__" in reads.seen, reads.seen


def test_on_the_device_path_a_non_finite_step_leaves_weights_and_moments_as_they_were(tmp_path):
    # Adam moves every weight by about lr on its first step: 1e30 makes every later loss non-finite.
    loop = make_loop(tmp_path, "--lr", "1e30")
    frames, labels, windows = next(iter(loop.parts.loader))
    loop.train_batch(frames, labels, windows)
    loop.state.step += 1
    after_first = weights(loop)
    moments = {id(p): {k: v.clone() for k, v in s.items()} for p, s in loop.optimizer.optimizer.state.items()}
    scalars = loop.train_batch(frames, labels, windows)
    assert not torch.isfinite(scalars.loss)
    assert not changed(after_first, loop)
    for p, state in loop.optimizer.optimizer.state.items():
        assert all(torch.equal(v, moments[id(p)][k]) for k, v in state.items()), "a skipped step moved Adam's state"
    assert loop.state.nonfinite_steps == 0  # not read yet: the host learns at the next log point or checkpoint
    loop.guard.settle()
    assert (loop.state.nonfinite_steps, loop.state.nonfinite_streak) == (1, 1)


@pytest.mark.parametrize("device_path", [False, True])
def test_both_paths_warn_of_the_same_steps_and_stop_at_the_same_step(device_path, request, tmp_path, capsys):
    if not device_path:
        request.getfixturevalue("foreach")
    # Logs every 10 steps: on the device path the verdicts are read at each epoch's end and before each checkpoint.
    loop = make_loop(tmp_path, "--lr", "1e30", "--max_nonfinite_steps", "3", "--log_every", "10")
    with pytest.raises(UserError, match=r"training stopped at step 4: 3 optimizer steps in a row \(steps 2-4\)") as stopped:
        loop.fit()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "step skipped" in line]
    assert warnings == [f"warning: step {n}: non-finite loss or gradient, step skipped ({n - 1} in a row)" for n in (2, 3, 4)]
    assert "the last checkpoint, written before them, is none" in str(stopped.value)  # epoch 1 ended inside the streak
    assert (loop.state.nonfinite_steps, loop.state.step) == (3, 4 if device_path else 3)
