"""Nothing lost: real training processes killed, preempted and blown up, then resumed.

One uninterrupted run is the reference; the other runs are stopped at a random step (printed
in every failure message) and must end bitwise where the reference ended.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cvae_dist import checkpoint as ckpt
from cvae_dist.train import EXIT_REQUEUE
from support import REPO, run_env, tiny_args

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

STEPS = 16  # 2 epochs of 8 optimizer steps
FINAL = f"checkpoints/checkpoint-{STEPS}"


def train_args(dataset_root: Path, save_root: Path, *extra: str) -> list[str]:
    return tiny_args(dataset_root, save_root, "--num_epoch", "2", "--per_save", "1", "--checkpointing_steps", "2", *extra)


def start(args: list[str], log: Path) -> subprocess.Popen:
    """The training script itself (no launcher in between), so signals reach the trainer and its exit status is ours."""
    with log.open("w") as handle:
        return subprocess.Popen(
            [sys.executable, str(REPO / "cvae_dist" / "train.py"), *args], env=run_env(), stdout=handle, stderr=subprocess.STDOUT, text=True
        )


def train(args: list[str], log: Path) -> subprocess.CompletedProcess:
    process = start(args, log)
    process.wait(timeout=1200)  # generous: a loaded CI machine runs these 10x slower
    return subprocess.CompletedProcess(process.args, process.returncode, log.read_text())


def wait_for_step(process: subprocess.Popen, log: Path, step: int) -> None:
    """Block until the progress bar in `log` has reached `step` optimizer steps."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        done = [int(n) for n in re.findall(rf"(\d+)/{STEPS} \[", log.read_text())]
        if done and max(done) >= step:
            return
        assert process.poll() is None, f"training ended before step {step}:\n{log.read_text()[-2000:]}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached:\n{log.read_text()[-2000:]}")


def assert_same_weights(expected: Path, actual: Path, context: str) -> None:
    reference, other = load_file(expected), load_file(actual)
    assert reference.keys() == other.keys(), context
    for key in reference:
        assert torch.equal(reference[key], other[key]), f"{context}: {key} differs"


@pytest.fixture(scope="module")
def reference(dataset_root, tmp_path_factory):
    save_root = tmp_path_factory.mktemp("reference") / "run"
    result = train(train_args(dataset_root, save_root), save_root.parent / "log.txt")
    assert result.returncode == 0, result.stdout[-3000:]
    return save_root


def test_sigkill_at_a_random_step_then_resume_latest_ends_bitwise_identical(reference, dataset_root, tmp_path):
    kill_at = random.randint(1, STEPS - 2)
    context = f"SIGKILL after step {kill_at}"
    save_root, log = tmp_path / "run", tmp_path / "killed.txt"
    process = start(train_args(dataset_root, save_root), log)
    wait_for_step(process, log, kill_at)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, context

    resumed = train(train_args(dataset_root, save_root, "--resume_from_checkpoint", "latest"), tmp_path / "resumed.txt")
    assert resumed.returncode == 0, f"{context}\n{resumed.stdout[-3000:]}"
    assert_same_weights(reference / FINAL / "model.safetensors", save_root / FINAL / "model.safetensors", context)
    assert_same_weights(reference / "best" / "model.safetensors", save_root / "best" / "model.safetensors", context)
    csv = "eval/psnr_per_frame.csv"
    assert (save_root / csv).read_text() == (reference / csv).read_text(), context
    assert not list(save_root.rglob("*.partial")), context  # a write cut short by the kill is cleaned up


@pytest.mark.parametrize("signal_name", ["SIGUSR1", "SIGTERM"])
def test_preemption_signal_finishes_the_step_saves_and_asks_for_a_requeue(signal_name, reference, dataset_root, tmp_path):
    signal_at = random.randint(1, STEPS - 4)
    context = f"{signal_name} after step {signal_at}"
    save_root, log = tmp_path / "run", tmp_path / "preempted.txt"
    process = start(train_args(dataset_root, save_root), log)
    wait_for_step(process, log, signal_at)
    process.send_signal(getattr(signal, signal_name))
    process.wait(timeout=600)
    output = log.read_text()
    assert process.returncode == EXIT_REQUEUE, f"{context}\n{output[-3000:]}"
    stopped = re.search(rf"stopped by {signal_name} after step (\d+): checkpoint (\S+);", output)
    assert stopped, f"{context}\n{output[-3000:]}"
    step, folder = int(stopped.group(1)), Path(stopped.group(2))
    assert signal_at <= step < STEPS and folder == ckpt.checkpoint_dir(save_root, step), context
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    assert (manifest["step"], manifest["reason"]) == (step, "preemption"), context
    assert manifest["config_digest"] == json.loads((reference / FINAL / ckpt.MANIFEST).read_text())["config_digest"]
    assert ckpt.verify(folder) is None, context
    if signal_name == "SIGTERM":
        return  # resuming is the same path for both signals; SIGUSR1 covers it
    resumed = train(train_args(dataset_root, save_root, "--resume_from_checkpoint", "latest"), tmp_path / "resumed.txt")
    assert resumed.returncode == 0, f"{context}\n{resumed.stdout[-3000:]}"
    # A stop during the validation after an epoch's last step checkpoints that epoch as done, with its validation due.
    epoch = manifest["epoch"]
    assert epoch in {(step - 1) // 8, step // 8}, context
    assert f"resumed from {folder} at epoch {epoch}, step {step}" in resumed.stdout, f"{context}\n{resumed.stdout[-3000:]}"
    assert_same_weights(reference / FINAL / "model.safetensors", save_root / FINAL / "model.safetensors", context)


def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_resumes_exactly(reference, dataset_root, tmp_path):
    save_root = tmp_path / "run"
    subprocess.run(["cp", "-a", str(reference), str(save_root)], check=True)
    for late in ckpt.list_checkpoints(save_root)[-3:-1]:  # checkpoints 12 and 14 go; 10 stays
        subprocess.run(["rm", "-r", str(late)], check=True)
    final = save_root / FINAL / "model.safetensors"
    os.truncate(final, final.stat().st_size // 2)
    result = train(train_args(dataset_root, save_root, "--resume_from_checkpoint", "latest"), tmp_path / "resumed.txt")
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(rf"warning: {save_root / FINAL} is damaged \(model.safetensors has [\d,]+ bytes, its manifest says", result.stdout)
    assert "resumed from" in result.stdout and "epoch 1, step 10" in result.stdout
    assert_same_weights(reference / FINAL / "model.safetensors", final, "resumed from checkpoint-10")


def test_non_finite_steps_are_skipped_counted_and_a_run_of_them_stops_naming_the_step(dataset_root, tmp_path):
    # Adam moves every weight by about lr on the first step: 1e30 makes all later losses non-finite.
    save_root = tmp_path / "run"
    args = train_args(dataset_root, save_root, "--lr", "1e30", "--checkpointing_steps", "1", "--max_nonfinite_steps", "3")
    result = train(args, tmp_path / "log.txt")
    assert result.returncode == 2, result.stdout[-3000:]
    lines = result.stdout.replace("\r", "\n").splitlines()
    assert [line for line in lines if "step skipped" in line] == [
        f"warning: step {n}: non-finite loss or gradient, step skipped ({n - 1} in a row)" for n in (2, 3, 4)
    ]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training stopped at step 4: 3 optimizer steps in a row (steps 2-4)")
    assert str(ckpt.checkpoint_dir(save_root, 1)) in errors[0]
    assert "Traceback" not in result.stdout
    # The last good checkpoint is the newest: none was written while steps were skipped.
    assert [p.name for p in ckpt.list_checkpoints(save_root)] == ["checkpoint-1"]
    assert ckpt.verify(ckpt.checkpoint_dir(save_root, 1)) is None
    first = load_file(ckpt.checkpoint_dir(save_root, 1) / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in first.values())
    events = EventAccumulator(str(save_root / "tb"), size_guidance={"scalars": 0}).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/nonfinite_steps")] == [(2, 1.0), (3, 2.0), (4, 3.0)]


def test_a_folder_holding_another_run_is_refused_and_left_as_it_was(reference, dataset_root, tmp_path, capsys):
    from cvae_dist.train import main

    before = snapshot(reference)
    assert main(train_args(dataset_root, reference, "--lr", "0.002")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"error: --save_root {reference} holds a run with other settings (lr 0.001 -> 0.002); add "
        "--resume_from_checkpoint latest to continue it with these settings, --overwrite to replace it, "
        "or choose another --save_root"
    ]
    assert snapshot(reference) == before


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
