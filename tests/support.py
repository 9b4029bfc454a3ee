"""Constants and plain functions the tests share, the training loop built in-process among them;
fixtures (datasets, a finished run, the launcher, a Slurm) live in conftest.py."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
from accelerate.state import AcceleratorState

from cvae_dist.config import parse_args
from cvae_dist.data.course import Video
from cvae_dist.training import Loop, build
from cvae_dist.training.preemption import StopSignal

REPO = Path(__file__).resolve().parents[1]

# Small enough for seconds of CPU, big enough for several windows of 8 frames per epoch.
SMALL_DATASET = dict(train_frames=128, clip_frames=64, val_frames=64, test_frames=40, test_sequences=2, height=64, width=128, progress=False)

# Flags that make a training run take seconds on a CPU: sizes only, so that the loader runs with the
# default workers that users get.
TINY_RUN = [
    "--preset",
    "tiny",
    "--train_vi_len",
    "8",
    "--val_vi_len",
    "16",
    "--batch_size",
    "2",
    "--lr_milestones",
    "--log_every",
    "1",
]


def run_env() -> dict[str, str]:
    """Environment for subprocesses: the Python environment first on PATH, as activated for the README's commands
    (`accelerate`, and DeepSpeed's `ninja`, whose version decides whether its op compiled at set-up is reused);
    the repository importable; one thread per process."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    """A TCP port nobody listens on now, so that concurrent multi-process tests never share a rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_args(dataset_root: Path, save_root: Path, *extra: str) -> list[str]:
    """Training flags of a seconds-long run of `dataset_root` into `save_root`: TINY_RUN, then `extra`."""
    return ["--DR", str(dataset_root), "--save_root", str(save_root), *TINY_RUN, *extra]


# The training loop in-process (make_loop): frames of SIDE x SIDE pixels, held in memory.
SIDE, TRAIN_FRAMES, VAL_FRAMES = 16, 16, 6
# 16 frames -> 4 windows of 4 -> 2 batches of 2 -> 2 optimizer steps an epoch.
STEPS_PER_EPOCH = 2


def videos() -> tuple[Video, Video]:
    """A training and a validation video of random frames and poses, the same every call."""
    rng = np.random.default_rng(0)

    def video(frames: int) -> Video:
        return Video(*(rng.integers(0, 256, (frames, 3, SIDE, SIDE), dtype=np.uint8) for _ in range(2)))

    return video(TRAIN_FRAMES), video(VAL_FRAMES)


def make_loop(save_root: Path, *flags: str, stop: StopSignal | None = None) -> Loop:
    """The training loop of a tiny run of `videos()` into `save_root`, built in this process (no loader workers:
    the frames are in memory); `flags` change it."""
    # --num_workers 0: the loop runs inside pytest's own process, on frames already in memory, where forking
    # 4 workers per test would cost more than its steps; every test that trains in a subprocess runs the default 4.
    config = parse_args(
        [
            *("--preset", "tiny", "--save_root", str(save_root), "--frame_H", str(SIDE), "--frame_W", str(SIDE)),
            *("--train_vi_len", "4", "--val_vi_len", str(VAL_FRAMES), "--batch_size", "2", "--num_workers", "0"),
            *("--bn_recalibration_windows", "4", "--lr_milestones", "--log_every", "1", "--num_epoch", "2", "--per_save", "1"),
            *flags,
        ]
    )
    # Accelerate keeps one state per process and refuses a second mixed precision in it; each loop is a run of its own.
    AcceleratorState._reset_state(reset_partial_state=True)
    return Loop(build(config, videos()), stop)
