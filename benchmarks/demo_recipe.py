"""How the demo's recipe does on data it was not tuned on: other seeds of the built-in generator,
and the independent generator of `tests/independent_dataset.py` (other shapes, backdrop, motion).

    python benchmarks/demo_recipe.py [--data builtin independent] [--seeds 1 2] [--threads N]

For each dataset it makes the data (under `data/recipe/`, reused when there), trains with
`cvae_dist/configs/demo.yaml` through `accelerate launch` (into `runs/recipe/`), and prints one
table of the validation rollout's average PSNR against copying the first frame, and of the
one-step PSNR against copying the previous frame, read from each run's `eval/psnr_per_frame.csv`.
Each run takes the demo's time, about ten minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, accelerate_launch, markdown_table, repo_env

sys.path.insert(0, str(REPO / "tests"))

DEMO_CONFIG = REPO / "cvae_dist" / "configs" / "demo.yaml"
COLUMNS = ("data", "seed", "copy first", "rollout", "gain", "copy previous", "one step", "one-step gain", "minutes")


def make_data(kind: str, seed: int, root: Path, train_frames: int) -> Path:
    if kind == "builtin":
        from cvae_dist.data.synthetic import generate_dataset

        return generate_dataset(root, train_frames=train_frames, seed=seed)
    import independent_dataset

    if not root.is_dir():
        independent_dataset.generate(root, train_frames=train_frames, seed=seed)
    return root


def train(data: Path, save_root: Path, threads: int) -> float:
    """The demo's recipe on `data`; returns the wall time in minutes."""
    flags = ["--config", str(DEMO_CONFIG), "--DR", str(data), "--save_root", str(save_root), "--overwrite"]
    began = time.perf_counter()
    subprocess.run(accelerate_launch("cpu.yaml", ["--num_cpu_threads_per_process", str(threads)], flags), check=True, env=repo_env())
    return (time.perf_counter() - began) / 60


def scores(csv_path: Path) -> dict[str, float]:
    """Averages over frames 1..T-1 of the run's final evaluation."""
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: sum(float(row[key]) for row in rows) / len(rows) for key in ("psnr", "baseline_psnr", "one_step_psnr", "copy_previous_psnr")}


def row(kind: str, seed: int, found: dict[str, float], minutes: float) -> list[str]:
    return [
        kind,
        str(seed),
        f"{found['baseline_psnr']:.2f}",
        f"{found['psnr']:.2f}",
        f"{found['psnr'] - found['baseline_psnr']:+.2f}",
        f"{found['copy_previous_psnr']:.2f}",
        f"{found['one_step_psnr']:.2f}",
        f"{found['one_step_psnr'] - found['copy_previous_psnr']:+.2f}",
        f"{minutes:.1f}",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument(
        "--data", nargs="+", choices=["builtin", "independent"], default=["builtin", "independent"], help="which generators (default: both)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="dataset seeds (default: 1; the demo's own data is seed 0)")
    parser.add_argument("--train-frames", type=int, default=None, help="training frames (default: the demo's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    parser.add_argument("--out", type=Path, default=Path("runs/recipe"), help="run folders (default: %(default)s)")
    args = parser.parse_args(argv)
    from cvae_dist.config import parse_args

    train_frames = args.train_frames or parse_args(["--config", str(DEMO_CONFIG)]).data.synthetic_train_frames
    rows = []
    for kind in args.data:
        for seed in args.seeds:
            data = make_data(kind, seed, Path("data/recipe") / f"{kind}-{train_frames}-seed{seed}", train_frames)
            save_root = args.out / f"{kind}-seed{seed}"
            minutes = train(data, save_root, args.threads)
            rows.append(row(kind, seed, scores(save_root / "eval" / "psnr_per_frame.csv"), minutes))
    print(markdown_table(list(COLUMNS), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
