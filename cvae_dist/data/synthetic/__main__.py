"""`python -m cvae_dist.data.synthetic --root DIR`: write a synthetic dataset in the course layout."""

from __future__ import annotations

import argparse
import time

from cvae_dist.config import AT_LEAST_0, AT_LEAST_1, Range, number
from cvae_dist.data.synthetic.motion import DEFAULT_FPS, MAX_FPS, MIN_FPS
from cvae_dist.data.synthetic.writer import DEFAULT_TRAIN_FRAMES, MIN_SIZE, generate_dataset, read_manifest
from cvae_dist.errors import ArgumentParser, UserError, output_folder, run_command

_DESCRIPTION = """\
Generate a synthetic dance-video dataset (video frames + pose labels) in the
course layout; file names are unpadded frame numbers from 0:

  ROOT/train/train_img/N.png  ROOT/train/train_label/N.png   train clips, glued into one video
  ROOT/val/val_img/N.png      ROOT/val/val_label/N.png       one video
  ROOT/test/test_img/I/0.png  ROOT/test/test_label/I/N.png   first image + all labels per test video
  ROOT/synthetic.json                                        version, settings, baselines

By default one performer (the course's: light-blue shirt, dark trousers) dances
in every split, walking across the stage, turning and crouching, as in the
course's data. --performers N is the harder benchmark: N outfits take turns in
training, and the val and test performers are never seen in training.

The same seed and flags always give byte-identical files. An existing ROOT
made with the same flags is reused; other contents are only replaced with
--overwrite. The copy-the-first-frame and copy-the-previous-frame PSNR of the
val and test videos (at 32x64, as a model sees them) are printed and kept in
synthetic.json.
"""


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m cvae_dist.data.synthetic", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    count, size = number(int, AT_LEAST_1), number(int, Range(MIN_SIZE))
    parser.add_argument("--root", required=True, type=output_folder, help="output folder (required)")
    parser.add_argument("--train-frames", type=count, default=DEFAULT_TRAIN_FRAMES, help="frames in the train split (default: %(default)s)")
    parser.add_argument("--seed", type=number(int, AT_LEAST_0), default=0, help="random seed, >= 0 (default: %(default)s)")
    parser.add_argument(
        "--performers",
        type=count,
        default=1,
        help="1: the course's performer in every split; N > 1: N outfits take turns in "
        "training, val and test performers unseen (default: %(default)s)",
    )
    parser.add_argument(
        "--fps",
        type=number(float, Range(MIN_FPS, MAX_FPS)),
        default=DEFAULT_FPS,
        help=f"frames per second the performance is sampled at, {MIN_FPS}-{MAX_FPS}: fewer move more between frames (default: %(default)s)",
    )
    parser.add_argument("--height", type=size, default=128, help=f"image height in pixels, >= {MIN_SIZE} (default: %(default)s)")
    parser.add_argument("--width", type=size, default=256, help=f"image width in pixels, >= {MIN_SIZE} (default: %(default)s)")
    parser.add_argument("--clip-frames", type=count, default=320, help="frames per train clip, each a performance of its own (default: %(default)s)")
    parser.add_argument("--val-frames", type=number(int, Range(2)), default=630, help="frames in the val video, >= 2 (default: %(default)s)")
    parser.add_argument("--test-sequences", type=count, default=5, help="number of test videos (default: %(default)s)")
    parser.add_argument("--test-frames", type=number(int, Range(2)), default=630, help="labels per test video, >= 2 (default: %(default)s)")
    parser.add_argument("--workers", type=count, default=None, help="worker processes; 1 renders in-process (default: number of CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="replace ROOT if it holds anything else")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _baseline_lines(manifest: dict) -> list[str]:
    found = manifest["baselines"]
    rows = [("val", found["val"])] + [(f"test {k}", scores) for k, scores in enumerate(found["test"])]
    return [f"baselines at {'x'.join(map(str, found['size']))} (average PSNR over frames 1..T-1):"] + [
        f"  {name:>7}: copy first frame {s['copy_first']:.2f} dB, copy previous frame {s['copy_previous']:.2f} dB" for name, s in rows
    ]


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _make(args: argparse.Namespace) -> None:
    settings = dict(
        train_frames=args.train_frames,
        seed=args.seed,
        height=args.height,
        width=args.width,
        clip_frames=args.clip_frames,
        val_frames=args.val_frames,
        performers=args.performers,
        fps=args.fps,
        test_sequences=args.test_sequences,
        test_frames=args.test_frames,
    )
    began = time.perf_counter()
    try:
        root = generate_dataset(args.root, workers=args.workers, overwrite=args.overwrite, **settings)
    except FileExistsError as error:
        raise UserError(f"--root {error}") from None
    manifest = read_manifest(root)
    counts = manifest["counts"]
    print("\n".join(_baseline_lines(manifest)))
    print(
        f"synthetic dataset ready at {root}: {counts['labels']} frames "
        f"({counts['images']} images, {counts['labels']} labels) in {time.perf_counter() - began:.1f} s"
    )


def main(argv=None) -> int:
    return run_command(argv, parse_command_line, _make)


if __name__ == "__main__":
    raise SystemExit(main())
