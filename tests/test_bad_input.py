"""The bad-input corpus: datasets, configs and checkpoints broken in the ways they arrive broken.

Each case either works (images that can be converted are converted) or ends, through the real
entry point `cvae_dist.train.main`, with status 2 and one `error:` line that names the file or
key and the problem: no traceback unless --debug, and nothing in the output folder touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import PRESETS, ModelConfig, load_config_file, parse_args, save_config_file
from cvae_dist.data.course import CourseDataset
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE
from cvae_dist.train import main
from support import REPO, TINY_RUN, run_env, tiny_args

SHORT_RUN = [*TINY_RUN, "--num_epoch", "1", "--partial", "0.25"]  # 4 windows of 8 frames: 2 steps
CONVERTED = {"0.png": "RGBA", "1.png": "L", "2.png": "I;16", "3.png": "P", "4.png": "size"}


def copy_dataset(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns(".cvae_cache")))


def convert(path: Path, kind: str) -> None:
    rgb = Image.open(path).convert("RGB")
    if kind == "RGBA":
        image = rgb.convert("RGBA")
    elif kind == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    elif kind == "size":
        image = rgb.resize((rgb.width * 3 // 2, rgb.height * 3 // 2), Image.BILINEAR)
    else:
        image = rgb.convert(kind)
    image.save(path)


@pytest.fixture(scope="module")
def converted_run(dataset_root, tmp_path_factory):
    """A real run on a dataset whose first frames are RGBA, greyscale, 16-bit, palette and of another size."""
    root = tmp_path_factory.mktemp("converted")
    data = copy_dataset(dataset_root, root / "data")
    for name, kind in CONVERTED.items():
        convert(data / "train" / "train_img" / name, kind)
    save_root = root / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "cvae_dist" / "train.py"),
            "--DR",
            str(data),
            "--save_root",
            str(save_root),
            *SHORT_RUN,
            "--checkpointing_steps",
            "1",
        ],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return data, save_root


@pytest.mark.slow
def test_convertible_images_are_converted_and_train(converted_run, dataset_root):
    data, save_root = converted_run
    assert (save_root / "checkpoints" / "checkpoint-2" / "model.safetensors").is_file()
    converted = CourseDataset(data, 32, 64, progress=False).train().frames
    original = CourseDataset(dataset_root, 32, 64, progress=False).train().frames
    assert converted.shape == original.shape == (128, 3, 32, 64)
    np.testing.assert_array_equal(converted[0], original[0])  # alpha dropped
    for grey in (1, 2):  # 8-bit and 16-bit greyscale: the same grey in all three channels
        np.testing.assert_array_equal(converted[grey][0], converted[grey][2])
        assert abs(converted[grey].astype(int) - original[grey].mean(axis=0)).mean() < 8
    for other in (3, 4):  # palette and resized: close to the original
        assert abs(converted[other].astype(int) - original[other]).mean() < 8
    np.testing.assert_array_equal(converted[5:], original[5:])


@dataclass
class Case:
    name: str
    break_it: Callable[[Path, Path, Path], list[str]]
    """(dataset copy, save_root, finished run copy) -> extra flags; breaks something on the way."""
    expected: Callable[[Path, Path, Path], str]
    """The exact error line, from the same three paths."""


def rm(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def lab_weights(folder: Path) -> Path:
    folder.mkdir()
    save_file(CVAE(ModelConfig(**PRESETS["lab"])).state_dict(), folder / "model.safetensors")
    save_config_file(parse_args(["--preset", "lab"]), folder / "config.yaml")
    return folder / "model.safetensors"


def malicious_state(run: Path) -> list[str]:
    """A checkpoint whose pickled training state would run code; its manifest is made to match."""

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = ckpt.list_checkpoints(run)[-1]
    torch.save({"epoch": Payload()}, folder / "custom_checkpoint_0.pkl")
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    manifest["files"]["custom_checkpoint_0.pkl"] = {
        "bytes": (folder / "custom_checkpoint_0.pkl").stat().st_size,
        "sha256": ckpt.sha256(folder / "custom_checkpoint_0.pkl"),
    }
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))
    return ["--resume_from_checkpoint", str(folder)]


def trained_on(run: Path) -> str:
    return load_config_file(run / "config.yaml").data.DR


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


TRAIN_IMG, TRAIN_LABEL = Path("train/train_img"), Path("train/train_label")
LAST = "checkpoints/checkpoint-2"

CASES = [
    Case(
        "missing label",
        lambda d, s, r: rm(d / TRAIN_LABEL / "5.png") or [],
        lambda d, s, r: f"{d / TRAIN_LABEL / '5.png'}: label missing for image {d / TRAIN_IMG / '5.png'} (1 missing in all)",
    ),
    Case(
        "extra label",
        lambda d, s, r: shutil.copy(d / TRAIN_LABEL / "5.png", d / TRAIN_LABEL / "500.png") and [],
        lambda d, s, r: f"{d / TRAIN_LABEL / '500.png'}: label has no image in {d / TRAIN_IMG} (1 unmatched labels)",
    ),
    Case(
        "non-numeric file name",
        lambda d, s, r: (d / TRAIN_IMG / "5.png").rename(d / TRAIN_IMG / "five.png") and [],
        lambda d, s, r: f"{d / TRAIN_IMG / 'five.png'}: file name has no frame number (expected names like 12.png or frame12.png)",
    ),
    Case(
        "corrupt PNG",
        lambda d, s, r: write(d / TRAIN_IMG / "7.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 50) or [],
        lambda d, s, r: f"{d / TRAIN_IMG / '7.png'}: cannot read image (Truncated File Read)",
    ),
    Case(
        "zero-byte PNG",
        lambda d, s, r: write(d / "val/val_label/3.png", b"") or [],
        lambda d, s, r: f"{d / 'val/val_label/3.png'}: cannot read image (cannot identify image file '{d / 'val/val_label/3.png'}')",
    ),
    Case(
        "truncated PNG",
        lambda d, s, r: write(d / TRAIN_IMG / "9.png", (d / TRAIN_IMG / "9.png").read_bytes()[:300]) or [],
        lambda d, s, r: f"{d / TRAIN_IMG / '9.png'}: cannot read image (image file is truncated)",
    ),
    Case(
        "empty folder",
        lambda d, s, r: [rm(p) for p in (d / "val/val_img").iterdir()] and [],
        lambda d, s, r: f"{d / 'val/val_img'}: no PNG frames in this folder",
    ),
    Case("missing folder", lambda d, s, r: rm(d / "val/val_label") or [], lambda d, s, r: f"{d / 'val/val_label'}: folder not found"),
    Case(
        "fewer frames than one window",
        lambda d, s, r: [rm(p) for folder in (TRAIN_IMG, TRAIN_LABEL) for p in (d / folder).iterdir() if int(p.stem) >= 5] and [],
        lambda d, s, r: f"--train_vi_len 8: the training video {d / TRAIN_IMG} has 5 frames, 1 of them with --partial 0.25, too few for one window",
    ),
    Case(
        "--train_vi_len longer than the training video",
        lambda d, s, r: ["--train_vi_len", "129", "--partial", "1"],
        lambda d, s, r: f"--train_vi_len 129: the training video {d / TRAIN_IMG} has 128 frames, too few for one window",
    ),
    Case(
        "--val_vi_len longer than the validation video",
        lambda d, s, r: ["--val_vi_len", "65"],
        lambda d, s, r: f"--val_vi_len 65: the validation video {d / 'val/val_img'} has 64 frames; use --val_vi_len 64 or fewer",
    ),
    Case("not a number on the command line", lambda d, s, r: ["--lr", "nan"], lambda d, s, r: "--lr must be a finite number > 0, got nan"),
    Case(
        "not a number in the config file",
        lambda d, s, r: write(s.parent / "c.yaml", b"lr: .nan\n") or ["--config", str(s.parent / "c.yaml")],
        lambda d, s, r: f"--config {s.parent / 'c.yaml'}: lr must be a finite number > 0, got nan",
    ),
    Case(
        "milestones out of order",
        lambda d, s, r: ["--lr_milestones", "5", "2"],
        lambda d, s, r: "--lr_milestones must be increasing, each >= 1, got [5, 2]",
    ),
    Case(
        "weights that do not exist",
        lambda d, s, r: ["--ckpt_path", str(s.parent / "nowhere")],
        lambda d, s, r: f"--ckpt_path {s.parent / 'nowhere'}: no such file or folder",
    ),
    Case(
        "unknown key in the config file",
        lambda d, s, r: write(s.parent / "c.yaml", b"batchsize: 4\n") or ["--config", str(s.parent / "c.yaml")],
        lambda d, s, r: f"--config {s.parent / 'c.yaml'}: unknown setting 'batchsize' (did you mean 'batch_size'?)",
    ),
    Case(
        "wrong type in the config file",
        lambda d, s, r: write(s.parent / "c.yaml", b"seed: 1.5\n") or ["--config", str(s.parent / "c.yaml")],
        lambda d, s, r: f"--config {s.parent / 'c.yaml'}: seed must be int, got 1.5",
    ),
    Case(
        "config file that is not YAML",
        lambda d, s, r: write(s.parent / "c.yaml", b"lr: [0.1\n") or ["--config", str(s.parent / "c.yaml")],
        lambda d, s, r: f"--config {s.parent / 'c.yaml'}: not valid YAML (while parsing a flow sequence)",
    ),
    Case("wrong type on the command line", lambda d, s, r: ["--lr", "fast"], lambda d, s, r: "--lr must be float, got 'fast'"),
    Case(
        "invalid choice",
        lambda d, s, r: ["--kl_anneal_type", "Linear"],
        lambda d, s, r: "--kl_anneal_type must be one of Cyclical, Monotonic, Without, got 'Linear'",
    ),
    Case("flag without its value", lambda d, s, r: ["--seed"], lambda d, s, r: "argument --seed: expected one argument"),
    Case(
        "weights of another preset",
        lambda d, s, r: ["--ckpt_path", str(lab_weights(s.parent / "lab"))],
        lambda d, s, r: (
            f"{s.parent / 'lab/model.safetensors'}: 'Decoder_Fusion.0.block.0.conv1.0.bias' has shape (172,), "
            "this network expects (28,) (weights of another --preset or width?)"
        ),
    ),
    Case(
        "checkpoint folder with a file missing",
        lambda d, s, r: rm(r / LAST / "optimizer.bin") or ["--resume_from_checkpoint", str(r / LAST)],
        lambda d, s, r: f"--resume_from_checkpoint {r / LAST}: optimizer.bin is missing (listed in manifest.json)",
    ),
    Case(
        "checkpoint with a corrupted weights file",
        lambda d, s, r: flip_a_byte(r / LAST / "model.safetensors") or ["--resume_from_checkpoint", str(r / LAST)],
        lambda d, s, r: f"--resume_from_checkpoint {r / LAST}: model.safetensors does not match its SHA-256 in the manifest (corrupted)",
    ),
    Case(
        "checkpoint whose pickled state would run code",
        lambda d, s, r: malicious_state(r),
        lambda d, s, r: (
            f"--resume_from_checkpoint {r / LAST}: custom_checkpoint_0.pkl holds print, which "
            "torch.load(weights_only=True) refuses to unpickle (it could run code)"
        ),
    ),
    Case(
        "checkpoint folder that does not exist",
        lambda d, s, r: ["--resume_from_checkpoint", str(r / "checkpoints/checkpoint-99")],
        lambda d, s, r: f"--resume_from_checkpoint {r / 'checkpoints/checkpoint-99'}: no such checkpoint folder",
    ),
    Case(
        "every checkpoint damaged",
        lambda d, s, r: (
            [flip_a_byte(c / "optimizer.bin") for c in ckpt.list_checkpoints(r)] and ["--save_root", str(r), "--resume_from_checkpoint", "latest"]
        ),
        lambda d, s, r: (
            f"--resume_from_checkpoint latest: none of the 2 checkpoints in {r / 'checkpoints'} is intact "
            "(checkpoint-2: optimizer.bin does not match its SHA-256 in the manifest (corrupted))"
        ),
    ),
    Case(
        "output folder holding a run with other settings",
        lambda d, s, r: ["--save_root", str(r), "--DR", trained_on(r), "--seed", "7"],
        lambda d, s, r: (
            f"--save_root {r} holds a run with other settings (seed 0 -> 7); add --resume_from_checkpoint latest to "
            "continue it with these settings, --overwrite to replace it, or choose another --save_root"
        ),
    ),
    Case(
        "--overwrite with --resume_from_checkpoint",
        lambda d, s, r: ["--save_root", str(r), "--overwrite", "--resume_from_checkpoint", "latest"],
        lambda d, s, r: "--overwrite and --resume_from_checkpoint contradict each other: choose one",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_with_one_line_naming_it_and_loses_nothing(case, converted_run, dataset_root, tmp_path, capsys):
    data = copy_dataset(dataset_root, tmp_path / "data")
    run = Path(shutil.copytree(converted_run[1], tmp_path / "finished"))
    save_root = tmp_path / "out" / "run"
    save_root.mkdir(parents=True)
    (save_root / "my_notes.txt").write_text("the user's own file")
    argv = ["--DR", str(data), "--save_root", str(save_root), *SHORT_RUN, *case.break_it(data, save_root, run)]
    before = {folder: snapshot(folder) for folder in (save_root, run)}

    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {case.expected(data, save_root, run)}"]
    assert captured.err.rstrip().splitlines()[-1] == errors[0] and "Traceback" not in captured.err + captured.out
    assert "pwned" not in captured.out
    assert {folder: snapshot(folder) for folder in (save_root, run)} == before

    with pytest.raises(UserError):  # --debug lets the error through with its traceback
        main([*argv, "--debug"])


# Through `accelerate launch`, as a user types them: the launcher adds its own report of the failed
# process (and exits 1), but the script's part is the one error line.
LAUNCHED = {
    "--lr nan": (["--lr", "nan"], lambda d: "--lr must be a finite number > 0, got nan"),
    "--val_vi_len too long": (
        ["--val_vi_len", "100"],
        lambda d: f"--val_vi_len 100: the validation video {d / 'val/val_img'} has 64 frames; use --val_vi_len 64 or fewer",
    ),
}


@pytest.mark.parametrize("flags, expected", LAUNCHED.values(), ids=LAUNCHED.keys())
def test_bad_flags_through_accelerate_launch_end_with_one_line(launch, flags, expected, dataset_root, tmp_path):
    save_root = tmp_path / "run"
    result = launch(tiny_args(dataset_root, save_root, *flags), cwd=tmp_path)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [f"error: {expected(dataset_root)}"]
    assert 'cvae_dist/train.py", line' not in result.stderr and not save_root.exists()


def test_a_test_sequence_without_630_labels_is_named(dataset_root, tmp_path):
    data = copy_dataset(dataset_root, tmp_path / "data")
    with pytest.raises(UserError) as error:
        CourseDataset(data, 32, 64, progress=False).test(labels_per_sequence=630)
    assert str(error.value) == f"{data / 'test/test_label/0'}: 40 labels, a test sequence needs 630"


def test_test_sequences_of_different_lengths_are_named(dataset_root, tmp_path):
    data = copy_dataset(dataset_root, tmp_path / "data")
    rm(data / "test/test_label/1/39.png")
    with pytest.raises(UserError) as error:
        CourseDataset(data, 32, 64, progress=False).test()
    assert str(error.value) == (
        f"{data / 'test/test_label/1'}: 39 labels, a test sequence needs 40 like {data / 'test/test_label/0'}, as all are rolled out in one batch"
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
