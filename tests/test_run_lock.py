"""One run per folder: the lock's holder, told apart from a run that is gone (tests/test_runs_end.py
runs two real training processes into one folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from cvae_dist.errors import UserError
from cvae_dist.processes import start_time
from cvae_dist.training import run_lock
from cvae_dist.training.run_lock import LOCK, Holder, RunLock


def plant(folder, holder: Holder, age: float = 0.0) -> None:
    """A lock file as another run would have left it, its heartbeat `age` seconds old."""
    path = folder / LOCK
    path.write_text(json.dumps(asdict(holder)))
    os.utime(path, (time.time() - age, time.time() - age))


def other_host(**changes) -> Holder:
    return replace(Holder.this_process(), host="node-17", pid=4242, process_start="1", **changes)


def test_a_live_run_on_another_host_keeps_its_lock(tmp_path):
    plant(tmp_path, other_host(job="991"))
    with pytest.raises(UserError, match=rf"^{tmp_path}: another run is writing into this folder \(PID 4242 on node-17, Slurm job 991, since "):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK).read_text())["host"] == "node-17"


def test_another_hosts_lock_without_a_heartbeat_is_taken_over(tmp_path):
    plant(tmp_path, other_host(), age=run_lock.STALE_AFTER + 60)
    lock = RunLock(tmp_path)
    (note,) = lock.acquire()
    assert note.startswith(f"note: {tmp_path}: taking over the lock of PID 4242 on node-17") and note.endswith(" s)")
    assert "no heartbeat for 36" in note
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK).exists()


def test_a_requeued_slurm_job_takes_its_own_lock_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    plant(tmp_path, other_host(job="991"))  # a fresh heartbeat: the job was requeued at once
    (note,) = RunLock(tmp_path).acquire()
    assert note.endswith("(this is the same Slurm job, requeued)")


def test_on_this_host_a_live_process_keeps_the_lock_and_a_dead_or_reused_pid_does_not(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = replace(Holder.this_process(), pid=sleeper.pid, process_start=start_time(sleeper.pid))
        plant(tmp_path, alive, age=3600)  # an old heartbeat does not matter on the same host
        with pytest.raises(UserError, match=rf"\(PID {sleeper.pid} on "):
            RunLock(tmp_path).acquire()
        plant(tmp_path, replace(alive, process_start="12345"))  # the same PID, another process
        (note,) = RunLock(tmp_path).acquire()
        assert note.endswith("(its process has ended)")
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / LOCK).unlink()
    plant(tmp_path, replace(alive, process_start=start_time(os.getpid())))
    (note,) = RunLock(tmp_path).acquire()
    assert note.endswith("(its process has ended)")


def test_an_unreadable_lock_is_taken_over_once_old_and_release_leaves_anothers_lock(tmp_path):
    (tmp_path / LOCK).write_text("{not json")
    os.utime(tmp_path / LOCK, (time.time() - 3600, time.time() - 3600))
    lock = RunLock(tmp_path)
    assert lock.acquire() == [f"note: {tmp_path}: taking over the lock of a run (unreadable lock file)"]
    plant(tmp_path, other_host())  # someone replaced it meanwhile: release leaves theirs
    lock.release()
    assert json.loads((tmp_path / LOCK).read_text())["host"] == "node-17"


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT", 0.05)
    lock = RunLock(tmp_path)
    lock.acquire()
    os.utime(tmp_path / LOCK, (0, 0))
    time.sleep(0.5)
    assert time.time() - (tmp_path / LOCK).stat().st_mtime < 5
    lock.release()
