"""Checkpoint folders: sealing, checking, recovering after a kill, rotation, and the run-folder rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cvae_dist import checkpoint as ckpt
from cvae_dist.config import PRESETS, ModelConfig, parse_args
from cvae_dist.errors import UserError
from cvae_dist.loss import kl_per_frame
from cvae_dist.model import CVAE
from cvae_dist.training.run_folder import choose_start


def config(save_root: Path, *flags: str):
    return parse_args(["--preset", "tiny", "--save_root", str(save_root), *flags])


def write_checkpoint(save_root: Path, step: int, payload: bytes = b"state") -> Path:
    """A sealed checkpoint as the trainer writes it: files into the staging folder, then seal."""
    folder = ckpt.checkpoint_dir(save_root, step)
    staging = ckpt.clear_staging(folder)
    (staging / "optimizer.bin").write_bytes(payload * step)
    torch.save({"epoch": 0, "step": step}, staging / "custom_checkpoint_0.pkl")
    ckpt.seal(staging, folder, config(save_root), step=step, epoch=0, reason="steps")
    return folder


def test_a_sealed_checkpoint_lists_every_file_with_size_and_checksum(tmp_path):
    folder = write_checkpoint(tmp_path, 3)
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    assert (manifest["step"], manifest["reason"]) == (3, "steps")
    assert manifest["config_digest"] == ckpt.run_identity(config(tmp_path))
    assert sorted(manifest["files"]) == ["config.json", "config.yaml", "custom_checkpoint_0.pkl", "optimizer.bin"]
    assert manifest["files"]["optimizer.bin"] == {"bytes": 15, "sha256": ckpt.sha256(folder / "optimizer.bin")}
    assert ckpt.verify(folder) is None
    assert not list(tmp_path.rglob("*.partial"))


def test_the_settings_hash_ignores_where_and_how_often_a_run_writes(tmp_path):
    same = ckpt.run_identity(config(tmp_path / "a", "--checkpointing_steps", "5", "--log_every", "2"))
    assert same == ckpt.run_identity(config(tmp_path / "b"))
    assert ckpt.run_identity(config(tmp_path / "a", "--lr", "0.01")) != same


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: os.truncate(f / "optimizer.bin", 4), "optimizer.bin has 4 bytes, its manifest says 15 (truncated or replaced)"),
        (lambda f: (f / "optimizer.bin").write_bytes(b"STATEstateSTATE"), "optimizer.bin does not match its SHA-256 in the manifest (corrupted)"),
        (lambda f: (f / "optimizer.bin").unlink(), "optimizer.bin is missing (listed in manifest.json)"),
        (lambda f: (f / ckpt.MANIFEST).unlink(), "no manifest.json: not a complete cvae-dist checkpoint"),
        (
            lambda f: (f / ckpt.MANIFEST).write_text("{"),
            "manifest.json is unreadable (JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
    ],
)
def test_damage_is_found_and_latest_falls_back_to_the_previous_intact_checkpoint(tmp_path, damage, problem):
    write_checkpoint(tmp_path, 2)
    latest = write_checkpoint(tmp_path, 3)
    damage(latest)
    assert ckpt.verify(latest) == problem
    folder, notes = ckpt.resolve_resume(tmp_path, "latest")
    assert folder == ckpt.checkpoint_dir(tmp_path, 2)
    assert notes == [f"warning: {latest} is damaged ({problem}); trying the checkpoint before it"]


def test_a_kill_while_writing_or_replacing_leaves_nothing_half_done(tmp_path):
    good = write_checkpoint(tmp_path, 2)
    unfinished = ckpt.clear_staging(ckpt.checkpoint_dir(tmp_path, 4))  # killed while writing checkpoint-4
    (unfinished / "optimizer.bin").write_bytes(b"half")
    best = tmp_path / ckpt.BEST
    best.mkdir()
    (best / "model.safetensors").write_bytes(b"weights")
    os.rename(best, tmp_path / ".best.old")  # killed between moving the old best aside and renaming the new one in
    notes = ckpt.recover(tmp_path)
    assert notes == [f"note: restored {best}, which a killed run was replacing", f"note: removed {unfinished}, an unfinished checkpoint write"]
    assert (best / "model.safetensors").read_bytes() == b"weights"
    assert ckpt.list_checkpoints(tmp_path) == [good] and not unfinished.exists()


def test_rotation_keeps_the_newest_k_and_never_touches_best(tmp_path):
    for step in (2, 4, 6, 8):
        write_checkpoint(tmp_path, step)
    (tmp_path / ckpt.BEST).mkdir()
    ckpt.rotate(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8"]
    assert (tmp_path / ckpt.BEST).is_dir()
    assert sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS).iterdir()) == ["checkpoint-6", "checkpoint-8"]


def test_same_settings_continue_the_run_and_overwrite_removes_only_what_a_run_wrote(tmp_path):
    run = config(tmp_path)
    ckpt.write_config(run, tmp_path)
    write_checkpoint(tmp_path, 2)
    (tmp_path / "my_notes.txt").write_text("mine")
    folder, notes = choose_start(run)
    assert folder == ckpt.checkpoint_dir(tmp_path, 2)
    assert notes == [f"note: {tmp_path} already holds a run with these settings: continuing it (--overwrite starts afresh)"]

    folder, notes = choose_start(config(tmp_path, "--lr", "0.5", "--overwrite"))
    assert folder is None
    assert notes == [f"note: --overwrite removed the previous run's checkpoints/, config.yaml from {tmp_path}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_notes.txt"]


def test_latest_in_an_empty_folder_starts_from_the_beginning(tmp_path):
    assert choose_start(config(tmp_path, "--resume_from_checkpoint", "latest")) == (
        None,
        [f"note: no checkpoint in {tmp_path / 'checkpoints'} yet: starting from the beginning"],
    )


def test_weights_are_checked_for_shape_from_the_safetensors_header(tmp_path):
    from safetensors.torch import save_file

    save_file(CVAE(ModelConfig(**PRESETS["lab"])).state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="has shape .* this network expects"):
        ckpt.check_compatible(CVAE(ModelConfig(**PRESETS["tiny"])).state_dict(), tmp_path / "model.safetensors")


def test_the_posterior_log_variance_is_clamped_so_the_kl_stays_finite():
    model = CVAE(ModelConfig(**PRESETS["tiny"]))
    head = model.Gaussian_Predictor[-1]
    with torch.no_grad():
        head.bias[head.out_channels // 2 :] = 500.0  # exp(500) overflows float32
    features = model.encode_frames(torch.rand(1, 3, 32, 64)), model.encode_labels(torch.rand(1, 3, 32, 64))
    mu, logvar = model.posterior(*features)
    assert logvar.max().item() == model.config.logvar_max
    assert torch.isfinite(kl_per_frame(mu[:, None], logvar[:, None])).all()
    model.config.logvar_clamp = False  # the course's unbounded head overflows
    assert not torch.isfinite(kl_per_frame(*(t[:, None] for t in model.posterior(*features)))).all()
