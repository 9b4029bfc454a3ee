"""Test-set generation: the course's Kaggle `submission.csv`, and a GIF per test sequence.

    python -m cvae_dist.generate --ckpt CKPT --DR ROOT --out DIR

Every test sequence is rolled out from its given first frame along its pose labels, all of them
together in one batched rollout. `submission.csv` has the header `id,0,1,...,6143` and one row
per frame: `id = sequence * 630 + t` (t = 0 is the given frame, sequences in the numeric order
of their folders), then the frame's pixels as ints `rint(x * 255)`, flattened channel-major
(k = c*H*W + h*W + w). The format holds ints 0-255, so x is clamped to [0, 1] first, which only
changes anything without the output sigmoid (`--output_activation none`); the rollout itself feeds
each prediction on unclamped, as the course's code does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cvae_dist.data.course import TestSequence, to_unit_float
from cvae_dist.errors import ArgumentParser, run_command
from cvae_dist.evaluate import add_inference_arguments, load_for_inference, to_uint8, write_panels_gif
from cvae_dist.rollout import generate

SUBMISSION = "submission.csv"


def roll_out_tests(model, sequences: list[TestSequence], device, z: str = "prior", seed: int = 0) -> torch.Tensor:
    """All test sequences (of equal length, see CourseDataset.test) in one batch -> (S, T, 3, H, W) as the
    network outputs them, on the CPU, the given frame first."""
    first = to_unit_float(torch.from_numpy(np.stack([s.first_frame for s in sequences]))).to(device)
    labels = to_unit_float(torch.from_numpy(np.stack([s.labels for s in sequences]))).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    return generate(model, first, labels, z=z, generator=generator).float().cpu()


def write_submission(videos: np.ndarray, path: Path, progress: bool = True) -> None:
    """uint8 videos (S, T, C, H, W) -> the course's submission.csv."""
    sequences, steps = videos.shape[:2]
    rows = videos.reshape(sequences * steps, -1)  # C,H,W-major per frame, sequences one after another
    with path.open("w", newline="") as handle:
        handle.write("id," + ",".join(map(str, range(rows.shape[1]))) + "\n")
        for row_id, row in enumerate(tqdm(rows, desc="submission.csv", unit="row", disable=not progress)):
            handle.write(f"{row_id}," + ",".join(map(str, row.tolist())) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m cvae_dist.generate",
        description=(
            "Roll out every test sequence (one batch) and write the course's Kaggle submission.csv and a GIF per sequence. "
            "A pixel is rint(x * 255) of the prediction x clamped to [0, 1], since the format holds the integers 0-255 "
            "(only an unbounded output, --output_activation none, leaves [0, 1]; the rollout itself is not clamped)."
        ),
    )
    add_inference_arguments(parser, out_help="folder for submission.csv and test_<i>.gif")
    return parser


def _generate(args: argparse.Namespace) -> None:
    model, dataset = load_for_inference(args)
    sequences = dataset.test()
    videos = to_uint8(roll_out_tests(model, sequences, args.device, z=args.z, seed=args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_submission(videos, out / SUBMISSION)
    for sequence, video in zip(sequences, videos):
        write_panels_gif([video, sequence.labels], out / f"test_{sequence.name}.gif")
    print(f"wrote {out / SUBMISSION} ({videos.shape[0]} sequences x {videos.shape[1]} frames) and {len(sequences)} GIFs (prediction | pose) in {out}")


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _generate)


if __name__ == "__main__":
    raise SystemExit(main())
