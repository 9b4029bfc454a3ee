"""Loader workers that ignore stop signals never keep a process from exiting (the hang of issue 24, in a few lines)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import run_env

# A persistent-worker loader iterated once and still referenced at exit, as the training loop leaves it.
SCRIPT = """
import signal, sys
from torch.utils.data import DataLoader

def plain_ignore(worker_id):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

if sys.argv[1] == "without-the-guards":  # not even imported: importing it installs the exit hook
    init = plain_ignore
else:
    from cvae_dist.training.preemption import ignore_stop_signals as init, shut_down_workers
loader = DataLoader(list(range(16)), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=init)
for _ in loader:
    pass
if sys.argv[1] == "shut-down":
    shut_down_workers(loader)
print("done", flush=True)
"""


def exits(how: str, timeout: float) -> bool:
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, how], env=run_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    return True


@pytest.mark.parametrize("how", ["shut-down", "left-to-the-exit-hook"])
def test_a_process_with_persistent_workers_that_ignore_sigterm_exits(how):
    assert exits(how, timeout=60)


@pytest.mark.slow  # it waits out its timeout
def test_without_the_guards_the_same_process_hangs_at_exit():
    """The control: multiprocessing's exit hook waits forever on workers that ignore its SIGTERM."""
    assert not exits("without-the-guards", timeout=15)
