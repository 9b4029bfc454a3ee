"""Stopping on a signal: a preemption, or a Slurm time limit ahead, asks the run to checkpoint and stop."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
import torch.distributed as dist


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint; the job should be requeued."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        super().__init__(f"stopped by {signal_name} after step {step}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopSignal:
    """SIGTERM or SIGUSR1 (a preemption, or a Slurm time limit ahead) asks the run to stop after
    the current optimizer step.

    The handler only sets a flag. Only some processes may get the signal, so all of them agree at
    each step boundary with a MAX all-reduce over a CPU (gloo) group, started at one step and
    read at the next: no step waits on the network or syncs the accelerator, and every process
    stops at the same step, one step after the first signal. One process just reads its flag.
    """

    def __init__(self, processes: int):
        self.group = dist.new_group(backend="gloo") if processes > 1 else None
        self.received = 0
        self.flag = torch.zeros(1, dtype=torch.int32)
        self.pending = None
        self.previous = {}

    def __enter__(self) -> StopSignal:
        self.previous = {sig: signal.signal(sig, self._receive) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.pending is not None:
            self.pending.wait()

    def _receive(self, signum, frame) -> None:
        self.received = signum

    def agreed(self) -> int:
        """The signal every process stops for now (0: none). Call on every process at every step boundary."""
        if self.group is None:
            return self.received
        stop = 0
        if self.pending is not None:
            self.pending.wait()
            stop = int(self.flag.item())
        self.flag = torch.tensor([self.received], dtype=torch.int32)
        self.pending = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return stop


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM/SIGUSR1 to the training process, which stops them itself.

    Slurm signals every process of a job step; a worker that died of it would crash the step
    that the training process is finishing before it saves."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
