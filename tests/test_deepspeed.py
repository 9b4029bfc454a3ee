"""DeepSpeed ZeRO through Accelerate, with the shipped configs: trains, saves and resumes exactly,
on one process and on two gloo processes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cvae_dist.checkpoint import load_model
from support import REPO, TINY_RUN, free_port

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

pytest.importorskip("deepspeed", reason="DeepSpeed is in the `deepspeed` extra (scripts/setup.sh dev installs it)")

CONFIGS = REPO / "accelerate_configs"


def deepspeed_launch(launch, config: str, processes: int, args: list[str], cwd):
    extra = ["--config_file", str(CONFIGS / config), "--num_processes", str(processes), "--main_process_port", str(free_port())]
    return launch(args, cwd=cwd, extra=extra, timeout=900)


# Two processes also keep the average of the weights: each process holds the whole model under ZeRO-2.
@pytest.mark.parametrize(("processes", "flags"), [(1, []), (2, ["--use_ema"])], ids=["1-process", "2-processes-ema"])
def test_zero2_trains_saves_and_resumes_exactly(launch, processes, flags, dataset_root, tmp_path):
    steps = 8 // processes  # one epoch of 16 windows in batches of 2 per process
    middle = steps // 2
    base = ["--DR", str(dataset_root), *TINY_RUN, "--num_epoch", "1", "--val_vi_len", "8", "--checkpointing_steps", str(middle), *flags]
    result = deepspeed_launch(launch, "deepspeed_zero2.yaml", processes, [*base, "--save_root", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"world size {processes} (DEEPSPEED" in result.stdout
    checkpoint = tmp_path / "run" / "checkpoints" / f"checkpoint-{middle}"
    assert (checkpoint / "pytorch_model" / "mp_rank_00_model_states.pt").is_file()  # DeepSpeed's own format
    assert len(list((checkpoint / "pytorch_model").glob("*optim_states.pt"))) == processes  # ZeRO shards the optimizer
    model, _ = load_model(tmp_path / "run" / "best")  # the weights also load without DeepSpeed
    assert model.training is False

    resumed = deepspeed_launch(
        launch,
        "deepspeed_zero2.yaml",
        processes,
        [*base, "--save_root", str(tmp_path / "resumed"), "--resume_from_checkpoint", str(checkpoint)],
        tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint} at epoch 0, step {middle}" in resumed.stdout
    for weights in ["model.safetensors", "ema.safetensors"] if flags else ["model.safetensors"]:
        uninterrupted = load_file(tmp_path / "run" / "checkpoints" / f"checkpoint-{steps}" / weights)
        continued = load_file(tmp_path / "resumed" / "checkpoints" / f"checkpoint-{steps}" / weights)
        assert uninterrupted.keys() == continued.keys()
        for key in uninterrupted:
            assert torch.equal(uninterrupted[key], continued[key]), (weights, key)


def test_zero3_refuses_the_average_of_the_weights_in_one_line(launch, dataset_root, tmp_path):
    args = ["--DR", str(dataset_root), *TINY_RUN, "--num_epoch", "1", "--use_ema", "--save_root", str(tmp_path / "run")]
    result = deepspeed_launch(launch, "deepspeed_zero3.yaml", 1, args, tmp_path)
    # The script ends with status 2 and one line; torchrun, which DeepSpeed launches through, then adds its own report.
    assert result.returncode != 0 and "exitcode  : 2" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: --use_ema: DeepSpeed ZeRO stage 3 shards the weights across processes; average them under ZeRO-2 (accelerate_configs/deepspeed_zero2.yaml) or DDP"
    ]
    assert result.stderr.count("Traceback") == 1 and "ChildFailedError" in result.stderr
