"""The GPU-only branches of a run's set-up, run on a CPU: the mixed precision chosen for a GPU's
compute capability, TF32 and cuDNN's autotuner, and an optimizer that keeps its fused or foreach
implementation when it resumes a state saved by the other."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate.state import AcceleratorState

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import parse_args
from cvae_dist.model import CVAE
from cvae_dist.training.build import fastest_flavour, make_optimizer
from cvae_dist.training.precision import choose_mixed_precision, cpu_has_bf16, fast_math_note, make_accelerator, set_fast_math
from cvae_dist.training.state import TrainingState
from support import make_loop

# (device type, compute capability, CPU computes bf16): an RTX 20xx, an A100, an RTX 30xx, an H100,
# an RTX 50xx, a CPU without bf16 hardware and one with it (AVX512-BF16 or AMX).
DEVICES = {
    "turing-7.5": ("cuda", (7, 5), False),
    "ampere-8.0": ("cuda", (8, 0), False),
    "ampere-8.6": ("cuda", (8, 6), False),
    "hopper-9.0": ("cuda", (9, 0), False),
    "blackwell-12.0": ("cuda", (12, 0), False),
    "cpu": ("cpu", None, False),
    "cpu-bf16": ("cpu", None, True),
}
AUTO = {
    "turing-7.5": "fp16",
    "ampere-8.0": "bf16",
    "ampere-8.6": "bf16",
    "hopper-9.0": "bf16",
    "blackwell-12.0": "bf16",
    "cpu": "no",
    "cpu-bf16": "bf16",
}
# What a fused or a foreach Adam writes in its param groups.
FLAGS = {"fused": {"fused": True, "foreach": None}, "foreach": {"fused": None, "foreach": True}}
OTHER = {"fused": "foreach", "foreach": "fused"}


@pytest.mark.parametrize("device", DEVICES)
def test_auto_picks_bf16_where_the_hardware_computes_it_fp16_on_older_gpus_and_fp32_elsewhere(device):
    precision, note = choose_mixed_precision("auto", "no", *DEVICES[device])
    assert precision == AUTO[device]
    assert note.startswith(f"note: mixed precision {precision} (--mixed_precision auto): ")
    reasons = {
        "turing-7.5": "bf16 needs compute capability 8.0 (Ampere) and this GPU has 7.5",
        "cpu": "this CPU has no bf16 arithmetic",
        "cpu-bf16": "AVX512-BF16 or AMX",
    }
    assert reasons.get(device, "runs bf16 on its tensor cores") in note


@pytest.mark.parametrize("device", DEVICES)
def test_the_launchers_bf16_becomes_fp16_only_below_ampere(device):
    precision, note = choose_mixed_precision(None, "bf16", *DEVICES[device])
    if device == "turing-7.5":
        assert precision == "fp16"
        assert "not the launcher's bf16: bf16 needs compute capability 8.0 (Ampere) and this GPU has 7.5" in note
        assert "--mixed_precision bf16" in note  # how to keep it
    else:
        assert (precision, note) == (None, None)  # None: the Accelerator reads the launcher's bf16 itself


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("asked", ["no", "fp16", "bf16"])
def test_a_precision_asked_of_the_script_is_kept_and_bf16_below_ampere_warned(asked, device):
    precision, note = choose_mixed_precision(asked, "bf16", *DEVICES[device])
    assert precision == asked
    if asked == "bf16" and device == "turing-7.5":
        assert note.startswith("warning: --mixed_precision bf16 runs slowly here: bf16 needs compute capability 8.0")
        assert "--mixed_precision fp16 (or auto)" in note  # the fix
    else:
        assert note is None


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's process-wide state forgotten before and after: it refuses a second mixed precision in one process."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU auto chooses by compute capability (the tests above)")
def test_auto_on_this_cpu_trains_as_its_hardware_allows_and_says_why(tmp_path, capsys, fresh_accelerate_state):
    accelerator = make_accelerator(parse_args(["--save_root", str(tmp_path), "--mixed_precision", "auto"]))
    expected = "bf16" if cpu_has_bf16() else "no"
    assert accelerator.mixed_precision == expected and accelerator.device.type == "cpu"
    assert f"note: mixed precision {expected} (--mixed_precision auto): this CPU" in capsys.readouterr().err


@pytest.fixture
def fast_math_flags():
    """The TF32 and cuDNN flags as they were, put back after the test (they are global to the process)."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("tf32", [False, True, False], ids=["off", "on", "off-again"])
def test_the_accelerator_sets_tf32_as_asked(tf32, tmp_path, fast_math_flags):
    # Each flag starts at the opposite, so that only make_accelerator can have set it.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    make_accelerator(parse_args(["--save_root", str(tmp_path), "--tf32" if tf32 else "--no-tf32"]))
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32


def test_cudnn_benchmark_is_turned_on_for_cuda_only_and_the_header_says_so(fast_math_flags):
    torch.backends.cudnn.benchmark = False
    set_fast_math(False, "cpu")
    assert torch.backends.cudnn.benchmark is False
    assert fast_math_note("cpu", True) == ""  # TF32 and cuDNN mean nothing on a CPU: the header leaves them out
    set_fast_math(False, "cuda")
    assert torch.backends.cudnn.benchmark is True
    assert fast_math_note("cuda", False) == ", TF32 off, cuDNN benchmark on"
    assert fast_math_note("cuda", True) == ", TF32 on, cuDNN benchmark on"


def next_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module, seed: int = 1) -> list[torch.Tensor]:
    """The weights after one step of `optimizer` on gradients drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator).to(parameter)
    optimizer.step()
    return [parameter.detach().clone() for parameter in model.parameters()]


def reference_step(model: torch.nn.Module, saved: dict, flavour: str) -> list[torch.Tensor]:
    """The next step of a plain `flavour` Adam on a copy of `model`, given `saved` as that flavour writes it."""
    twin = copy.deepcopy(model)
    optimizer = torch.optim.Adam(twin.parameters(), **{flavour: True})
    optimizer.load_state_dict({**saved, "param_groups": [{**group, **FLAGS[flavour]} for group in saved["param_groups"]]})
    return next_step(optimizer, twin)


def assert_flavour(optimizer: torch.optim.Optimizer, flavour: str) -> None:
    for group in optimizer.param_groups:
        assert {flag: group[flag] for flag in FLAGS[flavour]} == FLAGS[flavour]


def assert_resumed_as(optimizer: torch.optim.Optimizer, flavour: str, steps: int) -> None:
    """`optimizer` is `flavour` and holds the step counts of `steps` steps where that flavour keeps them."""
    assert_flavour(optimizer, flavour)
    for parameter in optimizer.param_groups[0]["params"]:
        step = optimizer.state[parameter]["step"]
        # Fused keeps it on the parameter's device (for its kernel to read), foreach on the CPU.
        assert step.dtype == torch.float32 and step.device == (parameter.device if flavour == "fused" else torch.device("cpu"))
        assert step.item() == steps


def test_an_optimizer_keeps_its_flavour_when_it_loads_a_checkpoint_of_the_other(tmp_path, capsys):
    """A run's checkpoint (written by the device's default flavour, fused) loaded by an optimizer of the other flavour."""
    loop = make_loop(tmp_path / "run", "--num_epoch", "1")
    device = loop.accelerator.device
    assert_flavour(loop.optimizer, fastest_flavour(device))
    loop.fit()
    # The run's header on a CPU is as it was: TF32 and cuDNN are left out where they mean nothing.
    header = {"cpu": "(NO, cpu, mixed precision no)", "cuda": "(NO, cuda, mixed precision no, TF32 on, cuDNN benchmark on)"}
    assert f"world size 1 {header[device.type]}\n" in capsys.readouterr().out
    checkpoint = ckpt.list_checkpoints(tmp_path / "run")[-1]

    accelerator = make_accelerator(loop.config)
    model = CVAE(loop.config.model)
    other = OTHER[fastest_flavour(device)]
    model, optimizer = accelerator.prepare(model, make_optimizer(model, loop.config.train, device, other))
    state = TrainingState()
    accelerator.register_for_checkpointing(state)  # as the loop does: the checkpoint holds its state
    accelerator.load_state(str(checkpoint))
    assert state.step == 2
    assert_resumed_as(optimizer, other, steps=2)  # the run's epoch of two steps
    saved = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    expected = reference_step(model, saved, other)
    # The same kernel on the same numbers: the same weights to the bit.
    torch.testing.assert_close(next_step(optimizer, model), expected, rtol=0, atol=0)


def test_a_resumed_optimizer_runs_the_devices_flavour_whoever_saved_the_state(tmp_path):
    """A state saved by the other flavour (foreach, as runs on a CPU wrote before fused became the default there) loaded by this device's own."""
    config = parse_args(["--preset", "tiny", "--save_root", str(tmp_path / "run")])
    writer = make_accelerator(config)
    own = fastest_flavour(writer.device)
    model = CVAE(config.model)
    model, optimizer = writer.prepare(model, make_optimizer(model, config.train, writer.device, OTHER[own]))
    for seed in (2, 3):
        next_step(optimizer, model, seed)
    writer.save_state(str(tmp_path / "state"))

    reader = make_accelerator(config)
    model = CVAE(config.model)
    model, optimizer = reader.prepare(model, make_optimizer(model, config.train, reader.device))
    reader.load_state(str(tmp_path / "state"))
    assert_resumed_as(optimizer, own, steps=2)
    saved = torch.load(tmp_path / "state" / "optimizer.bin", weights_only=True)
    expected = reference_step(model, saved, own)
    torch.testing.assert_close(next_step(optimizer, model), expected, rtol=0, atol=0)
