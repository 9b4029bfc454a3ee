"""One run per folder: a lock file in --save_root naming the run that writes there.

Two runs writing checkpoints, events and `best/` into one folder (a second terminal, a job
submitted twice) would leave a folder that belongs to neither. The lock names its holder (host,
PID, Slurm job, start time) and is refreshed by a heartbeat, so that a lock left by a run that
died can be told from a live one: on the same host its process is gone; on another host (a
shared file system) its heartbeat has stopped for STALE_AFTER seconds. A requeued Slurm job
(the same job id) takes its own lock back at once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from cvae_dist.errors import UserError
from cvae_dist.processes import running, start_time

LOCK = ".run.lock"
HEARTBEAT = 30.0
"""Seconds between two refreshes of the lock file's modification time."""
STALE_AFTER = 300.0
"""Seconds without a heartbeat after which another host's lock counts as abandoned (clock skew between hosts included)."""


def _slurm_job() -> str | None:
    """This Slurm job's id (an array task's own id), which a requeue keeps."""
    return os.environ.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""

    host: str
    """The holder's host name."""
    pid: int
    """The holder's process id on that host."""
    process_start: str | None
    """The holder process's start time (/proc), so that a reused PID is not taken for it."""
    job: str | None
    """The holder's Slurm job id, if it ran under Slurm."""
    started: str
    """When it took the lock (UTC, ISO 8601)."""
    token: str
    """A unique name for this taking of the lock."""

    @classmethod
    def this_process(cls) -> Holder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            process_start=start_time(os.getpid()),
            job=_slurm_job(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
        )

    def __str__(self) -> str:
        job = f", Slurm job {self.job}" if self.job else ""
        return f"PID {self.pid} on {self.host}{job}, since {self.started}"

    def gone_because(self, heartbeat_age: float) -> str | None:
        """Why this holder can no longer be writing (None: it may be alive)."""
        here = Holder.this_process()
        if self.host == here.host:
            if not running(self.pid) or start_time(self.pid) != self.process_start:
                return "its process has ended"
            return None
        if self.job is not None and self.job == here.job:
            return "this is the same Slurm job, requeued"
        if heartbeat_age > STALE_AFTER:
            return f"no heartbeat for {heartbeat_age:.0f} s"
        return None


class RunLock:
    """The lock of one --save_root, taken with `acquire` and given back with `release`."""

    def __init__(self, root: Path):
        self.path = root / LOCK
        self.holder: Holder | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> list[str]:
        """Take the lock, or raise UserError naming the live run that has it; returns notes to print."""
        notes = []
        for _ in range(10):  # another run may take over the same stale lock at the same moment: look again
            holder = Holder.this_process()
            try:
                with open(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as handle:
                    json.dump(asdict(holder), handle)
            except FileExistsError:
                note = self._take_over_if_gone()
                if note:
                    notes.append(note)
                continue
            self.holder = holder
            self._heartbeat = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
            self._heartbeat.start()
            return notes
        raise UserError(f"{self.path}: could not take the lock (other runs keep taking it)")

    def _take_over_if_gone(self) -> str | None:
        """Remove the lock file if its holder is gone (returning a note); raise UserError if it may be alive."""
        try:
            text, age = self.path.read_text(), time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None  # released meanwhile
        try:
            holder = Holder(**json.loads(text))
        except (ValueError, TypeError):
            if age < HEARTBEAT:  # being written right now
                time.sleep(0.1)
                return None
            holder, reason = None, "unreadable lock file"
        else:
            reason = holder.gone_because(age)
            if reason is None:
                raise UserError(
                    f"{self.path.parent}: another run is writing into this folder ({holder}); "
                    f"wait for it to end, stop it, or choose another --save_root"
                )
        # Renamed away first: of two runs that found the same stale lock, only one rename succeeds.
        aside = self.path.with_name(f"{LOCK}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        aside.unlink(missing_ok=True)
        return f"note: {self.path.parent}: taking over the lock of {holder or 'a run'} ({reason})"

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return  # the folder was removed; nothing to keep fresh

    def release(self) -> None:
        """Give the lock back (only if this process still holds it)."""
        if self.holder is None:
            return
        self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("token") == self.holder.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.holder = None
