"""--report_to: a run's scalars, images, per-frame PSNR and settings in wandb (offline) and MLflow (a local
file store), read back with their own formats; a second start continues the same tracker runs; a tracker
that is not installed is one error line. The loop runs in this process on tiny frames, as in test_loop."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from cvae_dist import checkpoint as ckpt
from cvae_dist import train
from cvae_dist.tracking import RUN_IDS, TB_PROJECT
from support import STEPS_PER_EPOCH, VAL_FRAMES, make_loop

wandb = pytest.importorskip("wandb", reason="wandb is in the `wandb` extra (scripts/setup.sh dev installs it)")
mlflow = pytest.importorskip("mlflow", reason="MLflow is in the `mlflow` extra (scripts/setup.sh dev installs it)")
from mlflow.tracking import MlflowClient  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb offline and MLflow in a file store, both under the returned folder; no network."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    # MLflow 3 refuses its file store unless told; a test needs no database.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield tmp_path
    wandb.teardown()  # its service process, which would otherwise outlive the test


def wandb_records(run_dir: Path) -> list:
    """The records of an offline wandb run: its .wandb file is a LevelDB-style log of 32 KiB blocks, each
    record's chunks behind a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last)."""
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks = (b"" if kind in (1, 2) else chunks) + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunks))
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    rows = [r.history for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "history"]
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in row.item} for row in rows]


def wandb_config(run_dir: Path) -> dict:
    updates = [r.config.update for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "config"]
    return {item.key: json.loads(item.value_json) for update in updates for item in update if item.key}


def test_a_run_logs_to_wandb_and_mlflow_and_a_second_start_continues_their_runs(offline, tmp_path):
    run = tmp_path / "run"
    make_loop(run, "--report_to", "all").fit()
    ids = json.loads((run / RUN_IDS).read_text())
    assert set(ids) == {"wandb", "mlflow"}
    assert any((run / TB_PROJECT).glob("events.out.tfevents.*"))  # TensorBoard as ever

    (first,) = (offline / "wandb").glob(f"offline-run-*-{ids['wandb']}")
    history = wandb_history(first)
    steps = [row["step"] for row in history if "train/loss" in row]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # train/ at optimizer steps, on its own axis
    assert [row["epoch"] for row in history if "val/psnr" in row] == [1, 2]
    assert [row["epoch"] for row in history if "epoch/loss" in row] == [1, 2]
    images = [row for row in history if row.get("val/rollout/_type") == "image-file"]
    assert [row["epoch"] for row in images] == [1, 2] and all((first / "files" / row["val/rollout/path"]).is_file() for row in images)
    (table,) = [row["final/psnr_per_frame_table/path"] for row in history if "final/psnr_per_frame_table/path" in row]
    frames = json.loads((first / "files" / table).read_text())
    assert frames["columns"] == ["frame", "psnr"] and [f for f, _ in frames["data"]] == list(range(1, VAL_FRAMES))
    config = wandb_config(first)
    assert config["lr"] == 0.001 and config["report_to"] == "all" and config["lr_milestones"] == []

    client = MlflowClient()
    mlflow_run = client.get_run(ids["mlflow"])
    assert mlflow_run.info.run_name == "run" and mlflow_run.data.params["report_to"] == "all"
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "train/loss")] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    per_frame = client.get_metric_history(ids["mlflow"], "final/psnr_per_frame")
    assert sorted(m.step for m in per_frame) == list(range(1, VAL_FRAMES))
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "val/psnr")] == [1, 2]
    assert [a.path for a in client.list_artifacts(ids["mlflow"], "val/rollout")] == ["val/rollout/epoch-0001.png", "val/rollout/epoch-0002.png"]

    # Resumed for a third epoch, as a requeued job would be: the same runs go on.
    make_loop(run, "--report_to", "all", "--num_epoch", "3", "--resume_from_checkpoint", "latest").fit()
    assert json.loads((run / RUN_IDS).read_text()) == ids
    second = next(p for p in (offline / "wandb").glob(f"offline-run-*-{ids['wandb']}*") if p != first)
    assert [row["epoch"] for row in wandb_history(second) if "val/psnr" in row] == [3]
    assert wandb_config(second)["num_epoch"] == 3
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "val/psnr")] == [1, 2, 3]
    # MLflow keeps a param's first value; the resume's new settings are in config.yaml.
    assert client.get_run(ids["mlflow"]).data.params["num_epoch"] == "2"

    # --overwrite starts a new run in both.
    make_loop(run, "--report_to", "all", "--num_epoch", "1", "--overwrite").fit()
    fresh = json.loads((run / RUN_IDS).read_text())
    assert fresh["wandb"] != ids["wandb"] and fresh["mlflow"] != ids["mlflow"]


def test_a_tensorboard_run_writes_no_tracker_ids(offline, tmp_path):
    make_loop(tmp_path / "run", "--num_epoch", "1").fit()
    assert not (tmp_path / "run" / RUN_IDS).exists() and not (offline / "wandb").exists()
    assert ckpt.clear_run(tmp_path / "run") == ["checkpoints/", "best/", "eval/", "tb/", "config.yaml"]


@pytest.mark.parametrize(
    "report_to, missing, line",
    [
        ("wandb", ["wandb"], "error: --report_to wandb: wandb not installed here; pip install -e '.[wandb]'"),
        ("all", ["wandb", "mlflow"], "error: --report_to all: wandb and mlflow not installed here; pip install -e '.[wandb,mlflow]'"),
    ],
)
def test_a_tracker_that_is_not_installed_is_one_error_line_before_anything_runs(report_to, missing, line, tmp_path, monkeypatch, capsys):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import wandb` fails as where it is not installed
    status = train.main(["--preset", "tiny", "--save_root", str(tmp_path / "run"), "--report_to", report_to])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not (tmp_path / "run").exists()
