"""End to end: real `accelerate launch` runs of cvae_dist/train.py on a small synthetic dataset."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cvae_dist.config import PRESETS, ModelConfig, parse_args
from cvae_dist.model import CVAE
from cvae_dist.train import DEMO_CONFIG
from support import REPO, run_env, tiny_args

STEPS_PER_EPOCH = 8  # 128 frames -> 16 windows of 8 -> 8 batches of 2


@pytest.fixture(scope="module")
def run(launch, dataset_root, tmp_path_factory):
    """Two epochs with a checkpoint every 3 steps and at every epoch end."""
    save_root = tmp_path_factory.mktemp("run") / "run"
    args = tiny_args(
        dataset_root, save_root, "--num_epoch", "2", "--per_save", "1", "--checkpointing_steps", "3", "--tfr_sde", "1", "--tfr_d_step", "0.5"
    )
    result = launch(args, cwd=save_root.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return save_root, args, result


def test_run_leaves_safetensors_checkpoints_best_weights_and_config(run):
    save_root, _, _ = run
    steps = sorted(int(p.name.split("-")[1]) for p in (save_root / "checkpoints").iterdir())
    assert steps == [3, 6, 8, 9, 12, 15, 16]
    final = load_file(save_root / "checkpoints" / "checkpoint-16" / "model.safetensors")
    expected = CVAE(ModelConfig(**PRESETS["tiny"])).state_dict()
    assert {k: tuple(v.shape) for k, v in final.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert (save_root / "best" / "model.safetensors").is_file()
    assert (save_root / "checkpoints" / "checkpoint-16" / "config.yaml").is_file()
    assert "preset: tiny" in (save_root / "config.yaml").read_text()


def test_run_writes_the_psnr_csv_plot_and_gif_and_prints_the_baseline(run):
    save_root, _, result = run
    with (save_root / "eval" / "psnr_per_frame.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(1, 16))
    assert all(0 < float(r["psnr"]) < 100 and 0 < float(r["baseline_psnr"]) < 100 for r in rows)
    assert (save_root / "eval" / "psnr_per_frame.png").stat().st_size > 10_000
    assert (save_root / "eval" / "rollout.gif").read_bytes()[:6] == b"GIF89a"
    assert "average PSNR over frames 1-15" in result.stdout and "copy-the-first-frame baseline" in result.stdout


def events(save_root: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(save_root / "tb"), size_guidance={"scalars": 0, "images": 0})
    return accumulator.Reload()


def test_tensorboard_has_the_training_scalars_and_image_strip(run):
    save_root, _, _ = run
    scalars = events(save_root).Tags()["scalars"]
    for tag in [
        "train/loss",
        "train/mse",
        "train/kl",
        "train/beta",
        "train/tfr",
        "train/lr",
        "train/grad_norm",
        "train/teacher_forcing",
        "val/psnr",
        "val/best_psnr",
        "val/baseline_psnr",
        "epoch/loss",
        "epoch/tfr",
        "final/psnr",
        "final/psnr_per_frame",
    ]:
        assert tag in scalars, tag
    accumulator = events(save_root)
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [e.value for e in accumulator.Scalars("epoch/tfr")] == pytest.approx([1.0, 0.5])
    assert len(accumulator.Scalars("final/psnr_per_frame")) == 15
    assert [e.step for e in accumulator.Images("val/rollout")] == [1, 2]


def test_hparams_are_in_the_run_with_its_metrics_declared(run):
    save_root, _, _ = run
    accumulator = events(save_root)
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"val/psnr", "val/best_psnr", "final/psnr"} <= metric_tags
    assert metric_tags <= set(accumulator.Tags()["scalars"])  # each declared metric has values in this run
    assert session.hparams["preset"].string_value == "tiny"
    assert session.hparams["lr"].number_value == pytest.approx(0.001)
    assert session.hparams["tfr_d_step"].number_value == pytest.approx(0.5)


def test_a_kl_schedule_that_never_rises_is_warned_about_once(run):
    save_root, _, result = run
    # The course's 10 KL cycles in 2 epochs: every epoch starts a cycle at beta 0.
    assert [e.value for e in events(save_root).Scalars("epoch/beta")] == [0.0, 0.0]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: beta stays 0")]
    assert warnings == [
        "warning: beta stays 0 for the whole run (the KL is never weighed): --kl_anneal_type Cyclical has 10 cycle(s) "
        "in 2 epoch(s); give each cycle at least 2 (fewer --kl_anneal_cycle, more --num_epoch, or --kl_anneal_unit step)"
    ]


@pytest.mark.slow
def test_resume_mid_epoch_reproduces_the_uninterrupted_run(launch, run, tmp_path):
    save_root, args, _ = run
    resumed_root = tmp_path / "resumed"
    resume_args = [a if a != str(save_root) else str(resumed_root) for a in args]
    result = launch([*resume_args, "--resume_from_checkpoint", str(save_root / "checkpoints" / "checkpoint-12")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "epoch 1, step 12" in result.stdout
    assert sorted(p.name for p in (resumed_root / "checkpoints").iterdir()) == ["checkpoint-15", "checkpoint-16"]
    uninterrupted = load_file(save_root / "checkpoints" / "checkpoint-16" / "model.safetensors")
    resumed = load_file(resumed_root / "checkpoints" / "checkpoint-16" / "model.safetensors")
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], resumed[key]), key


def test_evaluate_cli_reproduces_the_runs_scores(run, dataset_root, tmp_path):
    save_root, _, _ = run
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "cvae_dist.evaluate", "--ckpt", str(save_root), "--DR", str(dataset_root), "--out", str(out), "--val_vi_len", "16"],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "psnr_per_frame.csv").read_text() == (save_root / "eval" / "psnr_per_frame.csv").read_text()
    assert "copy-the-first-frame baseline" in result.stdout


def test_unknown_choice_ends_with_one_line_and_no_traceback(launch, dataset_root, tmp_path):
    result = launch(["--DR", str(dataset_root), "--save_root", str(tmp_path / "r"), "--kl_anneal_type", "Linear"], cwd=tmp_path)
    assert result.returncode != 0
    assert "error: --kl_anneal_type must be one of Cyclical, Monotonic, Without, got 'Linear'" in result.stderr
    # Accelerate's launcher reports the failed subprocess itself; the script adds no traceback of its own.
    assert 'cvae_dist/train.py", line' not in result.stderr


def test_missing_dataset_folder_is_named(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "cvae_dist" / "train.py"), "--DR", str(tmp_path / "nowhere"), "--save_root", str(tmp_path / "r")],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --DR {tmp_path / 'nowhere'}: dataset folder not found"]


def test_no_arguments_mean_the_demo():
    config = parse_args([], default_config=DEMO_CONFIG)
    assert config.train.preset == "tiny" and config.data.DR is None
    assert config.model.F_dim == PRESETS["tiny"]["F_dim"]
