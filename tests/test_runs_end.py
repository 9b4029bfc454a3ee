"""Runs end: the commands as the README prints them, with the shipped defaults (4 loader workers,
full precision, `accelerate launch`), and only size flags added.

Each command runs in a session of its own under a hard timeout, and must leave no process of that
session behind (a loader worker that outlives its run holds a Slurm node until its time limit).
Stop signals are sent in each phase of a run (building the frame cache, training, a validation
rollout, the final evaluation); each ends in a stated way within a stated time and resumes to the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cvae_dist import checkpoint as ckpt
from cvae_dist.train import EXIT_REQUEUE
from support import REPO, run_env

pytestmark = pytest.mark.slow

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
# The README's training command; the tests add a dataset, a folder and size flags only.
TRAIN = [ACCELERATE, "launch", "cvae_dist/train.py"]
# What a run may take here at most before it counts as hung (a tiny run takes 15-40 s on 2 busy cores).
RUN_TIMEOUT = 240
# A stop signal must end a run within this, whatever it was doing: well inside Slurm's default
# KillWait (30 s) between SIGTERM and SIGKILL.
STOP_WITHIN = 20.0


def run(command: list[str], log: Path, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """`command` in a session of its own; fails if it outlives `timeout` or leaves any process of its session behind."""
    process = start(command, log)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"{' '.join(command)} did not end within {timeout} s:\n{log.read_text()[-3000:]}")
    assert_session_ended(process.pid, log)
    return subprocess.CompletedProcess(command, process.returncode, log.read_text())


def start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=REPO, env=run_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def assert_session_ended(session: int, log: Path) -> None:
    """No live process of the session is left (a loader worker, a launcher child) once its leader has exited."""
    deadline = time.monotonic() + 10
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_members(session)
    if left:
        os.killpg(session, signal.SIGKILL)
        pytest.fail(f"processes {left} of the run were still alive 10 s after it exited:\n{log.read_text()[-2000:]}")


def session_members(session: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def size_flags(dataset: Path, save_root: Path, *extra: str) -> list[str]:
    return ["--DR", str(dataset), "--save_root", str(save_root), "--preset", "tiny", *extra]


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_the_default_training_command_ends_and_its_run_evaluates_and_generates(dataset_root, tmp_path):
    """The command that was seen to print "done" and never exit (2 runs in 12), then evaluate and generate on its run.
    test_preemption.py reproduces that hang every time, so one run here is enough to show the shipped command ends."""
    save_root = tmp_path / "run"
    started = time.monotonic()
    result = run([*TRAIN, *size_flags(dataset_root, save_root, "--num_epoch", "2", "--val_vi_len", "16")], tmp_path / "train.log")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "done in" in result.stdout and (save_root / "eval" / "rollout.gif").is_file()
    assert not (save_root / ".run.lock").exists()
    print(f"the default-worker run took {time.monotonic() - started:.1f} s")

    evaluated = run(
        [sys.executable, "-m", "cvae_dist.evaluate", "--ckpt", str(save_root), "--out", str(tmp_path / "eval")], tmp_path / "evaluate.log"
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:]
    assert (tmp_path / "eval" / "psnr_per_frame.csv").is_file()
    generated = run(
        [sys.executable, "-m", "cvae_dist.generate", "--ckpt", str(save_root), "--DR", str(dataset_root), "--out", str(tmp_path / "test")],
        tmp_path / "generate.log",
    )
    assert generated.returncode == 0, generated.stdout[-3000:]
    assert (tmp_path / "test" / "submission.csv").is_file()


def test_a_second_run_into_a_live_folder_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(dataset_root, tmp_path):
    # The script itself, as a Slurm step runs it: `accelerate launch` reports every failure as status 1.
    save_root, args = (
        tmp_path / "run",
        [sys.executable, "cvae_dist/train.py", *size_flags(dataset_root, tmp_path / "run", "--num_epoch", "3", "--val_vi_len", "16")],
    )
    first = start(args, tmp_path / "first.log")
    try:
        wait_for(lambda: re.search(r"\d+/\d+ \[", (tmp_path / "first.log").read_text()), first, tmp_path / "first.log", "the first run's first step")
        second = run(args, tmp_path / "second.log")
        assert second.returncode == 2, second.stdout[-3000:]
        errors = [line for line in second.stdout.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.fullmatch(
            rf"error: {save_root}: another run is writing into this folder \(PID \d+ on \S+, since \S+\); wait for it to end, stop it, or choose another --save_root",
            errors[0],
        ), second.stdout[-2000:]
        assert "Traceback" not in second.stdout
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a run that dies without a word: its lock stays behind
        first.wait(timeout=60)
    assert (save_root / ".run.lock").exists()
    again = run(args, tmp_path / "again.log")
    assert again.returncode == 0, again.stdout[-3000:]
    assert re.search(rf"note: {save_root}: taking over the lock of PID \d+ on \S+, since \S+ \(its process has ended\)", again.stdout)


def wait_for(found, process: subprocess.Popen, log: Path, what: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found():
            return
        assert process.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    pytest.fail(f"{what} not reached in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def long_videos(dataset_root, tmp_path_factory) -> Path:
    """The small dataset with a 2048-frame training video and the course's 630-frame validation video
    (its frames repeated, as links), so that the cache build and a rollout last long enough to be signalled."""
    root = tmp_path_factory.mktemp("long") / "dataset"
    for split, frames in (("train", 2048), ("val", 630)):
        for kind in ("img", "label"):
            source = sorted((dataset_root / split / f"{split}_{kind}").glob("*.png"), key=lambda p: int(p.stem))
            folder = root / split / f"{split}_{kind}"
            folder.mkdir(parents=True)
            for index in range(frames):
                (folder / f"{index}.png").symlink_to(source[index % len(source)])
    (root / "test").symlink_to(dataset_root / "test")
    return root


def stop_in_phase(command: list[str], log: Path, reached, what: str, delay: float = 0.0, stop: int = signal.SIGTERM) -> tuple[int, float, str]:
    """Start `command`, send SIGTERM (or `stop`) `delay` seconds after `reached(log text)` holds; returns the exit
    status, the seconds from the signal to the exit, and the output."""
    process = start(command, log)
    try:
        wait_for(lambda: reached(log.read_text()), process, log, what)
        time.sleep(delay)
        sent = time.monotonic()
        process.send_signal(stop)
        process.wait(timeout=120)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert_session_ended(process.pid, log)
    print(f"{signal.Signals(stop).name} during {what}: exit {process.returncode} after {took:.1f} s")
    return process.returncode, took, log.read_text()


def train_command(dataset: Path, save_root: Path, *extra: str) -> list[str]:
    """The training script itself, as a Slurm step runs it, so the signal reaches the trainer; 2 epochs of 2 steps, default workers."""
    return [sys.executable, "cvae_dist/train.py", *size_flags(dataset, save_root, "--num_epoch", "2", "--partial", "0.04", *extra)]


def test_a_stop_while_the_frame_cache_is_built_ends_at_once_and_leaves_no_partial_cache(long_videos, tmp_path):
    dataset = tmp_path / "dataset"  # its own cache folder, so that the cache is built here
    dataset.mkdir()
    for split in ("train", "val", "test"):
        (dataset / split).symlink_to(long_videos / split)
    status, took, output = stop_in_phase(
        train_command(dataset, tmp_path / "run"), tmp_path / "log", lambda text: "decoding train" in text, "the cache build"
    )
    assert status == EXIT_REQUEUE and took < STOP_WITHIN, output[-3000:]
    assert "stopped by SIGTERM during start-up; run the same command again" in output
    assert not list((dataset / ".cvae_cache").glob("*.tmp")), "a cache cut short was left behind"
    assert not (tmp_path / "run").exists()


def test_a_stop_during_a_validation_rollout_checkpoints_with_the_validation_due(long_videos, tmp_path):
    save_root = tmp_path / "run"
    status, took, output = stop_in_phase(
        # A second after the epoch's last step, the 630-frame rollout has begun; it takes several more.
        train_command(long_videos, save_root),
        tmp_path / "log",
        lambda text: " 2/4 [" in text,
        "the validation after epoch 1",
        delay=1.0,
    )
    assert status == EXIT_REQUEUE and took < STOP_WITHIN, output[-3000:]
    assert "epoch 1: validation PSNR" not in output, "the rollout should have been cut short"
    assert re.search(rf"stopped by SIGTERM after step 2: checkpoint {ckpt.checkpoint_dir(save_root, 2)};", output), output[-2000:]
    # Saved after the epoch ended (epoch 1), inside its validation.
    assert json.loads((ckpt.checkpoint_dir(save_root, 2) / ckpt.MANIFEST).read_text())["epoch"] == 1
    # That the resume runs the due validation first is tests/test_loop.py's, in-process and in seconds.


def test_a_stop_during_the_final_evaluation_ends_at_once_and_the_rerun_evaluates_again(long_videos, tmp_path):
    save_root = tmp_path / "run"
    # One epoch, and 96 frames of the validation video: the final evaluation (two rollouts, the GIF) still lasts
    # seconds, long enough to be signalled at its start, where the signal lands within a poll of the log.
    command = train_command(long_videos, save_root, "--num_epoch", "1", "--val_vi_len", "96")
    status, took, output = stop_in_phase(command, tmp_path / "log", lambda text: "epoch 1: validation PSNR" in text, "the final evaluation")
    assert status == EXIT_REQUEUE and took < STOP_WITHIN, output[-3000:]
    assert "stopped by SIGTERM during the final evaluation" in output
    assert not (save_root / "eval").exists() or not any((save_root / "eval").iterdir()), "half an evaluation was left behind"
    again = run(command, tmp_path / "again.log")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "its one epoch was already trained: evaluating the best weights again" in again.stdout
    assert (save_root / "eval" / "rollout.gif").is_file()


def test_the_loader_workers_end_with_their_parent_when_it_is_killed(dataset_root, tmp_path):
    """A training process killed with SIGKILL cannot shut its workers down: the kernel ends them with it (PR_SET_PDEATHSIG)."""
    log = tmp_path / "log"
    process = start(
        [sys.executable, "cvae_dist/train.py", *size_flags(dataset_root, tmp_path / "run", "--num_epoch", "3", "--val_vi_len", "16")], log
    )
    wait_for(lambda: re.search(r"\d+/\d+ \[", log.read_text()), process, log, "the first step")
    wait_for(lambda: len(children(process.pid)) == 4, process, log, "the default 4 loader workers", timeout=30)
    process.kill()
    process.wait(timeout=60)
    assert_session_ended(process.pid, log)


def children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def test_a_damaged_frame_cache_is_built_again_with_a_note(dataset_root, tmp_path):
    from cvae_dist.data.course import CourseDataset

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for split in ("train", "val", "test"):
        (dataset / split).symlink_to(dataset_root / split)
    expected = CourseDataset(dataset, 32, 64, progress=False).val().frames.copy()
    (cache,) = (dataset / ".cvae_cache").glob("val_img-*.npy")
    os.truncate(cache, cache.stat().st_size // 2)
    result = run([*TRAIN, *size_flags(dataset, tmp_path / "run", "--num_epoch", "1", "--val_vi_len", "16")], tmp_path / "log")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"note: {cache}: damaged frame cache" in result.stdout and "building it again" in result.stdout
    assert np.array_equal(np.load(cache), expected)


def test_ctrl_c_ends_the_run_with_one_line_and_no_process_left(dataset_root, tmp_path):
    status, took, output = stop_in_phase(
        [sys.executable, "cvae_dist/train.py", *size_flags(dataset_root, tmp_path / "run", "--num_epoch", "3", "--val_vi_len", "16")],
        tmp_path / "log",
        lambda text: re.search(r" [1-9]\d*/\d+ \[", text),
        "training",
        stop=signal.SIGINT,
    )
    assert status == 130 and took < STOP_WITHIN, output[-3000:]
    assert output.rstrip().endswith("interrupted") and "Traceback" not in output
    assert not (tmp_path / "run" / ".run.lock").exists()
