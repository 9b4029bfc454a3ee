"""Stopping on a signal, and loader workers that can never keep a process from ending.

A preemption, or a Slurm time limit ahead, sends SIGTERM (or SIGUSR1). Where the run can stop
cleanly at any instant (reading data, building the cache, the final evaluation) it stops at
once; while it trains it finishes the optimizer step or checkpoint at hand, checkpoints and stops.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter


class Stopped(Exception):
    """A stop signal arrived; raised where the run can stop at once, with nothing to save."""

    def __init__(self, signal_name: str, phase: str):
        super().__init__(f"stopped by {signal_name} during {phase}")
        self.signal_name, self.phase = signal_name, phase


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint; the job should be requeued."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        super().__init__(f"stopped by {signal_name} after step {step}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopSignal:
    """SIGTERM or SIGUSR1 asks the run to stop.

    Outside `deferred()` the handler raises Stopped at once, naming the phase. Inside it (optimizer
    steps, checkpoints, validation) the handler only sets a flag, which `agreed()` reads at each
    step boundary. Only some processes may get the signal, so after `agree_across(n)` all of them
    agree with a MAX all-reduce over a CPU (gloo) group, started at one call and read at the next:
    no step waits on the network or syncs the accelerator, and every process stops at the same
    boundary, one boundary after the first signal. One process just reads its flag.
    """

    def __init__(self):
        self.group = None
        self.received = 0
        self.deferring = False
        self.phase = "start-up"
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
        if not self.deferring:
            raise Stopped(signal.Signals(signum).name, self.phase)

    def agree_across(self, processes: int) -> None:
        """Make `agreed()` a decision of all `processes` (every process calls this once, in step)."""
        self.group = dist.new_group(backend="gloo") if processes > 1 else None

    @contextlib.contextmanager
    def immediate(self, phase: str) -> Iterator[None]:
        """A phase that any signal ends at once (raising Stopped), even one that arrived while deferred."""
        self.phase, self.deferring = phase, False
        if self.received:
            raise Stopped(signal.Signals(self.received).name, phase)
        yield

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A phase that a signal only flags, to be acted on at the next `agreed()`."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def agreed(self) -> int:
        """The signal every process stops for now (0: none). Call on every process at every boundary."""
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
    that the training process is finishing before it saves. `shut_down_workers` and
    `_kill_lingering_workers` see that no worker outlives a training process that ends, and
    `_die_with_parent` that none outlives one that is killed."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent()


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this process when its parent dies.

    torch's worker loop looks for its parent every few seconds, but a worker whose prefetched
    batches fill the pipe to a parent killed with SIGKILL then blocks flushing its queue forever.
    Elsewhere (no prctl) that loop is all there is."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


def shut_down_workers(loader: DataLoader) -> None:
    """Stop a loader's worker processes now, rather than leaving them to the garbage collector.

    Persistent workers live as long as the loader's iterator. At interpreter exit, multiprocessing
    stops daemon children with SIGTERM and then joins them, which waits forever on workers that
    ignore SIGTERM; torch's own exit hook only covers pinned-memory loaders. Lightning shuts its
    loaders' workers down the same way (`_shutdown_workers_and_reset_iterator`).
    """
    iterator = getattr(loader, "_iterator", None)
    if isinstance(iterator, _MultiProcessingDataLoaderIter):
        iterator._shutdown_workers()
    loader._iterator = None


@atexit.register
def _kill_lingering_workers() -> None:
    """The last guard: at exit, kill worker processes still alive, before multiprocessing's own exit
    hook (registered earlier, so run later) would send them a SIGTERM they ignore and wait forever."""
    if hasattr(signal, "SIGCHLD"):
        # torch's SIGCHLD handler would take these deaths for a crash and raise in the middle of this hook.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    workers = [child for child in multiprocessing.active_children() if child.daemon]
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join(timeout=5)
