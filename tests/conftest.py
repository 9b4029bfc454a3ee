"""Fixtures: a small synthetic dataset in the course layout (made once per test session), a
finished tiny run, the launcher as users type it, and a real local Slurm. Plain constants and
functions are in support.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cvae_dist.data.synthetic import generate_dataset
from local_slurm import LocalSlurm, unavailable_reason
from support import REPO, SMALL_DATASET, run_env, tiny_args

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: a thread pool each would make them fight over the cores.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("dataset") / "synthetic", workers=1, **SMALL_DATASET)


def _accelerate_launch(args: list[str], cwd: Path, timeout: int = 300, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *(extra or []),
        str(REPO / "cvae_dist" / "train.py"),
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def launch() -> Callable[..., subprocess.CompletedProcess]:
    """`launch(ARGS, cwd)` runs `accelerate launch cvae_dist/train.py ARGS` as a user would type it, on one
    CPU process (`extra`: more launcher flags before the script); returns the finished process."""
    return _accelerate_launch


@pytest.fixture(scope="session")
def tiny_run(dataset_root, launch, tmp_path_factory) -> Path:
    """A finished two-epoch run: teacher forcing in epoch 1 only, beta annealed per epoch, 8 steps an epoch."""
    save_root = tmp_path_factory.mktemp("tiny_run") / "teacher_forced_then_free"
    args = tiny_args(
        dataset_root,
        save_root,
        "--num_epoch",
        "2",
        "--per_save",
        "1",
        "--tfr",
        "1",
        "--tfr_sde",
        "1",
        "--tfr_d_step",
        "1",
        "--kl_anneal_type",
        "Monotonic",
    )
    result = launch(args, cwd=save_root.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return save_root


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real one-node Slurm (local_slurm.py) for the module's tests; skipped where one cannot run."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=4) as cluster:
        yield cluster


# Fixtures that start real training processes or a cluster: a test that needs one is end to end.
END_TO_END_FIXTURES = {"launch", "tiny_run", "slurm"}


# The files that take longest, longest first (by their seconds in a CI run on 2 cores: 154 for the docs'
# commands down to 14 for the loop's). `make test` hands files to its two workers in this order, then the
# rest, which take seconds each: a long file handed out last would leave the other worker idle meanwhile.
LONGEST_FIRST = (
    "test_doc_commands.py",
    "test_slurm.py",
    "test_runs_end.py",
    "test_deepspeed.py",
    "test_resilience.py",
    "test_gpu_check.py",
    "test_compile.py",
    "test_search.py",
    "test_accelerate_configs.py",
    "test_interop.py",
    "test_distributed.py",
    "test_disk_faults.py",
    "test_train.py",
    "test_bench.py",
    "test_course_flags.py",
    "test_synthetic.py",
    "test_bad_input.py",
    "test_preemption.py",
    "test_loop.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that trains in a subprocess or needs a Slurm, so that `-m "not slow"` is the in-process
    half; then put the longest files first."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
