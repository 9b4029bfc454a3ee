"""Course checkpoints in and out, and save_pretrained/from_pretrained."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from course_model import course_model, course_rollout
from cvae_dist import interop
from cvae_dist.checkpoint import list_checkpoints, load_model
from cvae_dist.config import PRESETS, ModelConfig, resolve, save_config_file
from cvae_dist.data.course import CourseDataset, Video, to_unit_float
from cvae_dist.errors import UserError
from cvae_dist.evaluate import evaluate_video
from cvae_dist.metrics import average_psnr, psnr_per_frame
from cvae_dist.model import CVAE
from support import REPO, TINY_RUN

TEMPLATE = json.loads((Path(__file__).parent / "data" / "template_state_dict.json").read_text())
COURSE_SHAPES = {key: tuple(shape) for key, shape in TEMPLATE["state_dict"].items()}


# Widths at which a cap on ConvFFN's 4x expansion (1024 channels) would change the state dict:
# the decoder fusion's 300 and 464 input channels, the generator's 384 and 512.
OTHER_WIDTHS = [dict(F_dim=256), dict(D_out_dim=384), dict(F_dim=384, L_dim=64, N_dim=16, D_out_dim=512)]


def course_checkpoint(path: Path) -> dict:
    """A checkpoint as the course's Trainer.save writes it (the model's state dict under 'optimizer' too)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in COURSE_SHAPES.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    data = {"state_dict": state, "optimizer": state, "lr": 1e-4, "tfr": 0.3, "last_epoch": 17}
    torch.save(data, path)
    return data


def weights_folder(folder: Path, config_flags: dict) -> CVAE:
    """A freshly initialised network saved as cvae_dist weights (model.safetensors + config.yaml)."""
    config = resolve({k: (v, "test") for k, v in config_flags.items()})
    model = CVAE(config.model)
    folder.mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_config_file(config, folder / "config.yaml")
    return model


def test_import_then_export_round_trips_a_course_checkpoint(tmp_path):
    original = course_checkpoint(tmp_path / "course.ckpt")
    assert interop.main(["import", str(tmp_path / "course.ckpt"), str(tmp_path / "imported")]) == 0
    model, config = load_model(tmp_path / "imported")
    assert (config.model.F_dim, config.model.L_dim, config.model.N_dim, config.model.D_out_dim) == (128, 32, 12, 192)
    # The course network's own behaviour: LeakyReLU(True) is slope 1, and no output sigmoid.
    assert config.model.course_leaky_relu and config.model.output_activation == "none"
    assert (config.train.lr, config.method.tfr) == (1e-4, 0.3)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, original["state_dict"][key]), key
    assert_same_network(CVAE.from_pretrained(tmp_path / "imported"), model)  # an imported folder is a save_pretrained one too

    interop.main(["export", str(tmp_path / "imported"), str(tmp_path / "exported.ckpt")])
    exported = torch.load(tmp_path / "exported.ckpt", weights_only=True)
    assert sorted(exported) == sorted(TEMPLATE["checkpoint_dict_keys"])
    assert (exported["lr"], exported["tfr"], exported["last_epoch"]) == (1e-4, 0.3, 17)
    assert exported["state_dict"].keys() == original["state_dict"].keys()
    for key, tensor in original["state_dict"].items():
        assert torch.equal(exported["state_dict"][key], tensor), key


def test_the_course_network_written_for_these_tests_has_the_template_state_dict():
    state = course_model().state_dict()
    assert list(state) == list(COURSE_SHAPES)
    assert {k: tuple(v.shape) for k, v in state.items()} == COURSE_SHAPES
    assert sum(p.numel() for p in course_model().parameters()) == 1_585_620


def test_exported_lab_network_loads_strictly_into_the_course_network(tmp_path):
    model = weights_folder(tmp_path / "ours", {"preset": "lab"})
    interop.export_course(tmp_path / "ours", tmp_path / "course.ckpt", force=True)
    exported = torch.load(tmp_path / "course.ckpt", weights_only=True)
    course = course_model()
    course.load_state_dict(exported["state_dict"], strict=True)
    for key, tensor in model.state_dict().items():
        assert torch.equal(course.state_dict()[key], tensor), key


@pytest.mark.parametrize("widths", OTHER_WIDTHS, ids=lambda w: ",".join(f"{k}={v}" for k, v in w.items()))
def test_checkpoints_pass_both_ways_at_other_widths_and_predict_the_same(widths, tmp_path):
    weights_folder(tmp_path / "ours", {"preset": "lab", **widths})
    interop.export_course(tmp_path / "ours", tmp_path / "exported.ckpt", force=True)
    course_model(**widths).load_state_dict(torch.load(tmp_path / "exported.ckpt", weights_only=True)["state_dict"], strict=True)

    torch.manual_seed(0)
    course = course_model(**widths).eval()
    torch.save({"state_dict": course.state_dict(), "optimizer": {}, "lr": 1e-3, "tfr": 1.0, "last_epoch": 3}, tmp_path / "course.ckpt")
    interop.import_course(tmp_path / "course.ckpt", tmp_path / "imported")
    model, config = load_model(tmp_path / "imported")  # loads strictly
    assert {k: getattr(config.model, k) for k in widths} == widths
    frames, labels = torch.rand(2, 3, 4, 8), torch.rand(2, 3, 4, 8)
    with torch.no_grad():
        frame_feature, label_feature = course.frame_transformation(frames), course.label_transformation(labels)
        mu, logvar = course.Gaussian_Predictor(torch.cat([frame_feature, label_feature], dim=1)).chunk(2, dim=1)
        frame = course.Generator(course.Decoder_Fusion(frame_feature, label_feature, mu))
        torch.testing.assert_close(model.encode_frames(frames), frame_feature)
        torch.testing.assert_close(model.encode_labels(labels), label_feature)
        torch.testing.assert_close(model.Gaussian_Predictor(frame_feature, label_feature), (mu, logvar))
        torch.testing.assert_close(model.decode(frame_feature, label_feature, mu), frame)


@pytest.mark.parametrize(
    "settings, fixes",
    [
        ({}, ["a sigmoid output", "LeakyReLU slope 0.01"]),
        ({"output_activation": "none"}, ["LeakyReLU slope 0.01"]),
        ({"course_leaky_relu": True}, ["a sigmoid output"]),
        ({"output_activation": "none", "course_leaky_relu": True}, []),
    ],
)
def test_export_refuses_weights_the_course_code_would_roll_out_otherwise(settings, fixes, tmp_path, capsys):
    torch.manual_seed(0)
    weights_folder(tmp_path / "ours", {"preset": "tiny", **settings})
    status = interop.main(["export", str(tmp_path / "ours"), str(tmp_path / "course.ckpt")])
    err = capsys.readouterr().err
    if not fixes:
        assert (status, err) == (0, "")
        return
    assert status == 2 and not (tmp_path / "course.ckpt").exists()
    (line,) = err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'ours' / 'model.safetensors'} was trained with ")
    # No dataset recorded: the check rolls random frames out, which the message says.
    assert "rolled out over 8 random frames" in line and "predicts other frames from frame 1 on" in line
    assert [fix for fix in ("a sigmoid output", "LeakyReLU slope 0.01") if fix in line] == fixes


def test_export_of_a_training_checkpoint_carries_its_epoch_tfr_and_optimizer(tiny_run, tmp_path):
    checkpoint = tiny_run / "checkpoints" / "checkpoint-16"
    interop.export_course(checkpoint, tmp_path / "course.ckpt", force=True)
    exported = torch.load(tmp_path / "course.ckpt", weights_only=True)
    assert exported["last_epoch"] == 2 and exported["tfr"] == 0.0 and exported["lr"] == pytest.approx(1e-3)
    assert len(exported["optimizer"]["state"]) == len(exported["state_dict"]) - 3  # BatchNorm buffers have no Adam state
    tiny = CVAE(ModelConfig(**PRESETS["tiny"]))
    tiny.load_state_dict(exported["state_dict"], strict=True)


def course_scores(course_ckpt: Path, video: Video, model: ModelConfig) -> torch.Tensor:
    """PSNR of each frame of `video` rolled out by the course's network (the checkpoint loaded strictly)
    and its Tester.py loop, with evaluate's z: a generator seeded 0, one draw a frame."""
    course = course_model(model.F_dim, model.L_dim, model.N_dim, model.D_out_dim).eval()
    course.load_state_dict(torch.load(course_ckpt, weights_only=True)["state_dict"], strict=True)
    truth = to_unit_float(torch.from_numpy(np.array(video.frames)))
    labels = to_unit_float(torch.from_numpy(np.array(video.labels)))
    frames = course_rollout(course, truth[0], labels, model.N_dim, torch.Generator().manual_seed(0))
    # Unclamped, as the course's Tester scores, and as evaluate scores.
    return psnr_per_frame(frames, truth)


@pytest.mark.slow
def test_the_course_compatible_config_trains_weights_the_course_code_rolls_out_the_same(launch, dataset_root, tmp_path, capsys):
    run = tmp_path / "course_compatible"
    config = REPO / interop.COURSE_COMPATIBLE_CONFIG
    result = launch(["--config", str(config), "--DR", str(dataset_root), "--save_root", str(run), *TINY_RUN, "--num_epoch", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert interop.main(["export", str(run), str(tmp_path / "course.ckpt")]) == 0
    assert capsys.readouterr().err == ""

    model, settings = load_model(run)
    video = CourseDataset(dataset_root, settings.data.frame_H, settings.data.frame_W, progress=False).val()
    ours = evaluate_video(model, video, "cpu", seed=0)
    theirs = course_scores(tmp_path / "course.ckpt", video, settings.model)
    # The same arithmetic in the same order but for the label encoder's batching: float32 rounding, far below 0.01 dB.
    torch.testing.assert_close(theirs[1:], ours.psnr[1:], rtol=0, atol=0.01)
    assert abs(float(average_psnr(theirs)) - ours.average) < 0.01


def test_export_refuses_default_weights_naming_the_flags_and_force_exports_them(tiny_run, tmp_path, capsys):
    out = tmp_path / "course.ckpt"
    assert interop.main(["export", str(tiny_run), str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {tiny_run / 'best' / 'model.safetensors'} was trained with a sigmoid output")
    assert "validation video, the course's code predicts other frames from frame 1 on" in line
    assert "train with --config cvae_dist/configs/course_compatible.yaml (or --output_activation none --course_leaky_relu)" in line
    assert line.endswith("or add --force to export these anyway")
    assert not out.exists()

    assert interop.main(["export", str(tiny_run), str(out), "--force"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote {out}\n"
    (warning,) = captured.err.splitlines()
    assert warning.startswith("warning: ") and warning.endswith("; exporting anyway (--force)")
    # What the check guards against: the course's code rolls these weights out far worse than cvae-dist does.
    model, settings = load_model(tiny_run)
    video = CourseDataset(settings.data.DR, settings.data.frame_H, settings.data.frame_W, progress=False).val()
    ours = evaluate_video(model, video, "cpu", seed=0)
    theirs = float(average_psnr(course_scores(out, video, settings.model)))
    assert not theirs >= ours.average - 1, theirs  # NaN, a rollout that diverged, counts as worse too


def test_import_reads_with_weights_only_and_refuses_pickled_objects(tmp_path):
    data = course_checkpoint(tmp_path / "course.ckpt")
    data["args"] = argparse.Namespace(lr=1e-3)  # the kind of object weights_only=True refuses to unpickle
    torch.save(data, tmp_path / "unsafe.ckpt")
    with pytest.raises(UserError, match="weights_only=True"):
        interop.import_course(tmp_path / "unsafe.ckpt", tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_import_of_something_else_names_the_problem(tmp_path, capsys):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    assert interop.main(["import", str(tmp_path / "other.ckpt"), str(tmp_path / "out")]) == 2
    assert "expected the course's checkpoint dict" in capsys.readouterr().err


def test_save_pretrained_and_from_pretrained_round_trip(tmp_path):
    model = CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none"))
    model.save_pretrained(tmp_path / "pretrained")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "pretrained").iterdir()}
    assert json.loads((tmp_path / "pretrained" / "config.json").read_text())["output_activation"] == "none"
    loaded = CVAE.from_pretrained(tmp_path / "pretrained")
    assert not loaded.training
    assert_same_network(loaded, model)
    # The folder also loads where evaluate, generate, export and --ckpt_path load weights, with its network's settings.
    loaded, config = load_model(tmp_path / "pretrained")
    assert_same_network(loaded, model)
    assert config.model == model.config


def test_a_runs_weights_folders_are_save_pretrained_folders_too(tiny_run):
    for folder in [tiny_run / "best", *list_checkpoints(tiny_run)]:
        model, config = load_model(folder)
        assert_same_network(CVAE.from_pretrained(folder), model)


def test_weights_folders_written_before_config_json_still_load(tiny_run, tmp_path):
    old = shutil.copytree(tiny_run / "best", tmp_path / "best")
    (old / "config.json").unlink()
    model, config = load_model(old)
    assert config.train.num_epoch == 2  # the run's own settings, from config.yaml
    assert_same_network(model, load_model(tiny_run / "best")[0])
    (old / "config.yaml").unlink()
    with pytest.raises(UserError, match="config.yaml: missing \\(nor is there a config.json\\); it records which network"):
        load_model(old)


def assert_same_network(loaded: CVAE, expected: CVAE) -> None:
    assert loaded.config == expected.config
    state = loaded.state_dict()
    assert state.keys() == expected.state_dict().keys()
    for key, tensor in expected.state_dict().items():
        assert torch.equal(state[key], tensor), key


def test_from_pretrained_is_strict(tmp_path):
    CVAE(ModelConfig(**PRESETS["tiny"])).save_pretrained(tmp_path / "pretrained")
    weights = tmp_path / "pretrained" / "model.safetensors"
    save_file({**load_file(weights), "stray.weight": torch.zeros(1)}, str(weights))
    with pytest.raises(RuntimeError, match="stray.weight"):
        CVAE.from_pretrained(tmp_path / "pretrained")
    CVAE.from_pretrained(tmp_path / "pretrained", strict=False)  # only when asked for
