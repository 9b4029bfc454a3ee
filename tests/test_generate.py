"""Test-set generation: the course's Kaggle submission.csv, checked cell by cell."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from safetensors.torch import save_file

from cvae_dist import generate as gen
from cvae_dist.config import PRESETS, ModelConfig, resolve, save_config_file
from cvae_dist.data.course import CourseDataset, to_unit_float
from cvae_dist.model import CVAE
from cvae_dist.rollout import generate

SEQUENCES, FRAMES = 2, 40  # support.SMALL_DATASET's test split
C, H, W = 3, 32, 64


def fresh_weights(folder: Path, dataset_root: Path) -> CVAE:
    """A freshly initialised tiny network (output head randomised so frames are not all grey)."""
    config = resolve({"preset": ("tiny", "test"), "DR": (str(dataset_root), "test")})
    torch.manual_seed(0)
    model = CVAE(config.model)
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.5)
    folder.mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_config_file(config, folder / "config.yaml")
    return model.eval()


def test_submission_csv_is_the_course_format_cell_by_cell(dataset_root, tmp_path):
    model = fresh_weights(tmp_path / "weights", dataset_root)
    out = tmp_path / "out"
    assert gen.main(["--ckpt", str(tmp_path / "weights"), "--DR", str(dataset_root), "--out", str(out), "--z", "mean"]) == 0

    with (out / "submission.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", *map(str, range(C * H * W))]
    body = rows[1:]
    assert len(body) == SEQUENCES * FRAMES
    assert [int(r[0]) for r in body] == list(range(SEQUENCES * FRAMES))  # id = sequence * frames + t
    pixels = np.array([[int(v) for v in r[1:]] for r in body])
    assert pixels.min() >= 0 and pixels.max() <= 255 and all(v.isdigit() for v in body[0][1:])

    # Decode each row back into a (C, H, W) frame and compare with the model's rollout.
    sequences = CourseDataset(dataset_root, H, W).test()
    first = to_unit_float(torch.from_numpy(np.stack([s.first_frame for s in sequences])))
    labels = to_unit_float(torch.from_numpy(np.stack([s.labels for s in sequences])))
    with torch.no_grad():
        expected = np.rint(generate(model, first, labels, z="mean").clamp(0, 1).numpy() * 255).astype(int)
    decoded = pixels.reshape(SEQUENCES, FRAMES, C, H, W)
    assert np.array_equal(decoded, expected)
    # Channel-major flattening, spelled out: column k = c*H*W + h*W + w.
    c, h, w = 2, 5, 7
    assert int(body[1 * FRAMES + 9][1 + c * H * W + h * W + w]) == expected[1, 9, c, h, w]
    # Row t = 0 of each sequence is its given first frame.
    for index, sequence in enumerate(sequences):
        assert np.array_equal(decoded[index, 0], sequence.first_frame)
    assert len(np.unique(decoded[:, 1:])) > 5  # a real prediction, not a constant


def test_one_batched_rollout_matches_rolling_out_each_sequence_alone(dataset_root, tmp_path):
    model = fresh_weights(tmp_path / "weights", dataset_root)
    sequences = [replace(s, labels=s.labels[:8]) for s in CourseDataset(dataset_root, H, W).test()]
    batched = gen.roll_out_tests(model, sequences, "cpu", z="mean")
    for index, sequence in enumerate(sequences):
        alone = gen.roll_out_tests(model, [sequence], "cpu", z="mean")[0]
        torch.testing.assert_close(batched[index], alone, atol=1e-5, rtol=0)


def test_a_gif_per_sequence_shows_prediction_and_pose(dataset_root, tmp_path):
    fresh_weights(tmp_path / "weights", dataset_root)
    out = tmp_path / "out"
    assert gen.main(["--ckpt", str(tmp_path / "weights"), "--out", str(out)]) == 0  # --DR from the checkpoint's config
    for name in ("0", "1"):
        frames = iio.imread(out / f"test_{name}.gif", index=None)
        assert frames.shape[0] == FRAMES
        assert frames.shape[1:3] == (2 * H, 2 * (2 * W + 1))  # prediction | separator | pose, scaled 2x


def test_an_unbounded_output_is_clamped_to_pixels_0_to_255_only_in_the_submission(dataset_root):
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none")).eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=2.0)  # frames well outside [0, 1]
    sequences = [replace(s, labels=s.labels[:8]) for s in CourseDataset(dataset_root, H, W).test()]
    raw = gen.roll_out_tests(model, sequences, "cpu", z="mean")
    assert raw.min() < 0 and raw.max() > 1  # the rollout feeds on what the network drew, as the course's does
    expected = np.rint(raw.clamp(0, 1).numpy() * 255)
    assert np.array_equal(gen.to_uint8(raw), expected) and expected.min() == 0 and expected.max() == 255
