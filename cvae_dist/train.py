"""Train the course's conditional VAE with Hugging Face Accelerate.

    accelerate launch cvae_dist/train.py [--config FILE.yaml] [--flag value ...]

With no arguments it runs the demo: the built-in synthetic dataset (made on first use), the
`tiny` preset, on whatever device is there. `--help` lists every flag; `--test` evaluates
instead of training, as the course's flag does.

The run itself is `cvae_dist.training`: `build` makes its parts, `Loop.fit` trains them.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (`accelerate launch cvae_dist/train.py`): import the package from the
    # repository rather than letting this folder's modules shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import os
import time

from cvae_dist import evaluate
from cvae_dist.checkpoint import EVAL
from cvae_dist.config import Config, parse_args
from cvae_dist.errors import run_command
from cvae_dist.evaluate import summary_line
from cvae_dist.training import Loop, Preempted, build
from cvae_dist.training.precision import make_accelerator
from cvae_dist.training.preemption import Stopped, StopSignal

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
# Exit status after a preemption checkpoint: sysexits' EX_TEMPFAIL, "try again later". A Slurm
# script requeues the job on it (or a cluster lists it in RequeueExit) and resumes `latest`.
EXIT_REQUEUE = 75
# `accelerate launch` and torchrun report any failure of this script as status 1, which hides
# EXIT_REQUEUE from whoever started them; a batch script that needs the status names a file here.
STATUS_FILE_ENV = "CVAE_DIST_STATUS_FILE"


def parse_command_line(argv: list[str]) -> Config:
    """The run's settings, checked (config.validate); no arguments mean the demo."""
    if not argv:
        print(f"No arguments: running the demo ({DEMO_CONFIG}). `--help` lists every flag.", flush=True)
    return parse_args(argv, default_config=DEMO_CONFIG)


def _train(config: Config) -> int:
    started = time.perf_counter()
    try:
        with StopSignal() as stop:
            with stop.immediate("start-up"):
                loop = Loop(build(config), stop)
            evaluation = loop.fit()
    except Preempted as preempted:
        if loop.is_main:
            print(
                f"{preempted}: checkpoint {preempted.checkpoint}; continue with --resume_from_checkpoint latest "
                f"(exit status {EXIT_REQUEUE} asks for a requeue)",
                flush=True,
            )
        return EXIT_REQUEUE
    except Stopped as stopped:
        # Nothing between checkpoints is lost: the run's checkpoints, if any, are all complete.
        print(f"{stopped}; run the same command again to go on (exit status {EXIT_REQUEUE} asks for a requeue)", file=sys.stderr, flush=True)
        return EXIT_REQUEUE
    if evaluation is not None:
        minutes = (time.perf_counter() - started) / 60
        print(f"done in {minutes:.1f} min; best epoch {loop.state.best_epoch}: {summary_line(evaluation)}")
        print(
            f"outputs in {config.train.save_root} (eval/ has the CSV, plot and GIF); tensorboard --logdir {config.train.logging_dir or config.train.save_root}"
        )
    return 0


def _test(config: Config) -> None:
    """--test, as the course's: evaluate weights on the validation video instead of training.

    It is `python -m cvae_dist.evaluate`, on the device training would use, on the main process
    only (an evaluation is one rollout; the other processes have nothing to do)."""
    train = config.train
    accelerator = make_accelerator(config)
    if not accelerator.is_main_process:
        return
    weights, flag = (train.ckpt_path, "--ckpt_path") if train.ckpt_path is not None else (train.save_root, "--save_root")
    # `--flag=value`, so that a path starting with a dash stays a value.
    argv = [f"--ckpt={weights}", f"--out={Path(train.save_root) / EVAL}", f"--seed={train.seed}", f"--device={accelerator.device}"]
    argv += [f"--val_vi_len={config.data.val_vi_len}"] + ([f"--DR={config.data.DR}"] if config.data.DR is not None else [])
    evaluate.evaluate_checkpoint(evaluate.parse_command_line(argv), ckpt_flag=flag)


def record_status(status: int) -> None:
    """Write the exit status to the file $CVAE_DIST_STATUS_FILE names, if any, from global rank 0 only."""
    path = os.environ.get(STATUS_FILE_ENV)
    if path and int(os.environ.get("RANK", "0")) == 0:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{status}\n")


def main(argv: list[str] | None = None) -> int:
    status = run_command(argv, parse_command_line, lambda config: _test(config) if config.train.test else _train(config))
    record_status(status)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
