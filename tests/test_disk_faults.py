"""A full disk, a folder that is a file: one line that says what happened and what is intact, and
nothing half-written left behind. The full disks are real: small tmpfs mounts (the tests need root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cvae_dist import checkpoint as ckpt
from support import REPO, TINY_RUN, run_env

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

ONE_LINE_ERROR = re.compile(r"^error: .+$")


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the size asked for; unmounted afterwards."""
    mounts = []

    def mount(size_kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=240)


def single_error(result: subprocess.CompletedProcess) -> str:
    """The run's one `error:` line (status 2, no traceback)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if ONE_LINE_ERROR.match(line)]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def test_a_full_disk_while_writing_a_checkpoint_names_the_checkpoint_a_resume_will_use(dataset_root, small_disk):
    save_root = small_disk(2048) / "run"  # room for two checkpoints of the tiny network (740 KB each), not three
    result = command(
        "cvae_dist/train.py", "--DR", str(dataset_root), "--save_root", str(save_root), *TINY_RUN, "--num_epoch", "1", "--checkpointing_steps", "1"
    )
    error = single_error(result)
    found = re.fullmatch(
        rf"error: {save_root}/checkpoints/checkpoint-(\d+): the disk is full \([\d.]+ MiB free there\) while writing the checkpoint; "
        rf"the partial write was removed; --resume_from_checkpoint latest will use {save_root}/checkpoints/checkpoint-(\d+)",
        error,
    )
    assert found, error
    failed, latest = int(found.group(1)), int(found.group(2))
    assert latest == failed - 1 and ckpt.verify(ckpt.checkpoint_dir(save_root, latest)) is None
    assert not list(save_root.rglob("*.partial")) and not (save_root / ".run.lock").exists()


def test_a_full_disk_while_writing_an_evaluation_leaves_none_of_its_files(tiny_run, small_disk):
    out = small_disk(96) / "eval"
    error = single_error(command("-m", "cvae_dist.evaluate", "--ckpt", str(tiny_run), "--out", str(out)))
    assert re.fullmatch(
        rf"error: {out}: the disk is full \([\d.]+ MiB free there\) while writing the evaluation; the partial write was removed; "
        "the weights it scored are untouched; run the evaluation again with space to spare",
        error,
    ), error
    assert list(out.iterdir()) == []


def test_a_full_disk_while_writing_the_frame_cache_leaves_no_partial_cache(dataset_root, small_disk, tmp_path):
    dataset = small_disk(1024) / "dataset"  # the frames stay where they are; the cache beside them fills the disk
    dataset.mkdir()
    for split in ("train", "val", "test"):
        (dataset / split).symlink_to(dataset_root / split)
    result = command("cvae_dist/train.py", "--DR", str(dataset), "--save_root", str(tmp_path / "run"), *TINY_RUN, "--num_epoch", "1")
    error = single_error(result)
    assert re.fullmatch(
        rf"error: {dataset}/\.cvae_cache: the disk is full \([\d.]+ MiB free there\) while writing the frame cache of train_label; the partial write was removed; "
        r"nothing was trained yet; free some space \(or set XDG_CACHE_HOME\) and run again",
        error,
    ), error
    assert [p.name.split("-")[0] for p in (dataset / ".cvae_cache").iterdir()] == ["train_img"]


def test_a_save_root_that_is_a_file_is_one_line(dataset_root, tmp_path):
    save_root = tmp_path / "taken"
    save_root.write_text("not a folder")
    result = command("cvae_dist/train.py", "--DR", str(dataset_root), "--save_root", str(save_root), *TINY_RUN, "--num_epoch", "1")
    assert single_error(result) == f"error: --save_root {save_root}: a file, not a folder"
    assert save_root.read_text() == "not a folder"
