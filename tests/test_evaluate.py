"""Evaluation: the rollout scored as the course scores it, and over N latent samples."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cvae_dist import evaluate
from cvae_dist.config import PRESETS, ModelConfig, resolve, save_config_file
from cvae_dist.data.course import CourseDataset, Video, to_unit_float
from cvae_dist.evaluate import evaluate_video
from cvae_dist.metrics import average_psnr, psnr_per_frame, ssim_per_frame
from cvae_dist.model import CVAE
from cvae_dist.rollout import generate, one_step


@pytest.fixture
def tiny_weights(dataset_root, tmp_path):
    config = resolve({"preset": ("tiny", "test"), "DR": (str(dataset_root), "test")})
    torch.manual_seed(0)
    model = CVAE(config.model)
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_config_file(config, folder / "config.yaml")
    return model.eval(), folder


def test_n_samples_are_rolled_out_together_and_scored_mean_and_best(tiny_weights, dataset_root):
    model, _ = tiny_weights
    video = CourseDataset(dataset_root, 32, 64).val()
    result = evaluate.evaluate_video(model, video, "cpu", length=12, seed=3, samples=4)
    assert result.psnr_samples.shape == (4, 12) and result.ssim_samples.shape == (4, 12)
    assert not torch.equal(result.psnr_samples[0], result.psnr_samples[1])  # the samples differ
    torch.testing.assert_close(result.psnr, result.psnr_samples.mean(0))
    best = int(average_psnr(result.psnr_samples).argmax())
    torch.testing.assert_close(result.best_psnr, result.psnr_samples[best])
    torch.testing.assert_close(result.best_ssim, result.ssim_samples[int(average_psnr(result.ssim_samples).argmax())])
    scores = result.averages()
    assert scores["best_psnr"] >= scores["psnr"] and scores["best_ssim"] >= scores["ssim"]
    # `pred` is the best sample's video, and its scores are what the table says.
    truth = torch.from_numpy(np.array(video.frames[:12])).float() / 255
    assert float(average_psnr(psnr_per_frame(result.pred, truth))) == pytest.approx(scores["best_psnr"], abs=1e-4)


def test_z_mean_is_deterministic(tiny_weights, dataset_root):
    model, _ = tiny_weights
    video = CourseDataset(dataset_root, 32, 64).val()
    first = evaluate.evaluate_video(model, video, "cpu", length=6, seed=1, z="mean")
    second = evaluate.evaluate_video(model, video, "cpu", length=6, seed=2, z="mean")
    assert torch.equal(first.pred, second.pred)


def test_evaluate_cli_writes_mean_and_best_of_n(tiny_weights, dataset_root, tmp_path, capsys):
    _, folder = tiny_weights
    out = tmp_path / "eval"
    code = evaluate.main(["--ckpt", str(folder), "--DR", str(dataset_root), "--out", str(out), "--val_vi_len", "10", "--samples", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "over 3 samples: PSNR mean-of-N" in printed and "SSIM mean-of-N" in printed
    with (out / "psnr_per_frame.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(1, 10))
    assert all(0 < float(r["ssim"]) <= 1 and float(r["best_psnr"]) > 0 and math.isfinite(float(r["best_ssim"])) for r in rows)
    assert evaluate.main(["--ckpt", str(folder), "--out", str(out), "--samples", "2", "--z", "mean"]) == 2
    assert capsys.readouterr().err == "error: --samples > 1 needs --z prior: with z at its mean every sample is the same\n"
    assert evaluate.main(["--ckpt", str(folder), "--DR", str(dataset_root), "--out", str(out), "--val_vi_len", "100", "--z", "mean"]) == 0
    assert capsys.readouterr().err == (
        f"warning: --val_vi_len 100: the validation video {dataset_root / 'val/val_img'} has 64 frames; rolling out all 64\n"
    )
    assert len((out / "psnr_per_frame.csv").read_text().splitlines()) == 64  # the header and frames 1-63
    assert evaluate.main(["--ckpt", str(folder / "nowhere"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --ckpt {folder / 'nowhere'}: no such file or folder\n"


def test_evaluation_scores_the_network_output_unclamped_as_the_course_does():
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none")).eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.5)  # frames well outside [0, 1]
    frames = torch.randint(0, 256, (6, 3, 32, 64), dtype=torch.uint8)
    video = Video(frames=frames.numpy(), labels=torch.randint(0, 256, (6, 3, 32, 64), dtype=torch.uint8).numpy())
    truth, labels = to_unit_float(frames), to_unit_float(torch.from_numpy(video.labels))
    with torch.no_grad():
        pred = generate(model, truth[:1], labels[None], z="mean")[0]
        ahead = one_step(model, truth[None], labels[None], z="mean")[0]
    assert pred.min() < 0 or pred.max() > 1

    evaluation = evaluate_video(model, video, "cpu", z="mean")
    torch.testing.assert_close(evaluation.pred, pred)
    torch.testing.assert_close(evaluation.psnr, psnr_per_frame(pred, truth))
    torch.testing.assert_close(evaluation.ssim, ssim_per_frame(pred, truth))
    torch.testing.assert_close(evaluation.one_step_psnr, psnr_per_frame(ahead, truth))
    # A clamp only ever moves a prediction towards the truth's range: it would have scored higher.
    assert evaluation.average < float(average_psnr(psnr_per_frame(pred.clamp(0, 1), truth)))
