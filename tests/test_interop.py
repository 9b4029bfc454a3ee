"""Course checkpoints in and out, and save_pretrained/from_pretrained."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cvae_dist import interop
from cvae_dist.checkpoint import load_model, load_weights_into
from cvae_dist.config import PRESETS, ModelConfig, resolve, save_config_file
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE
from safetensors.torch import load_file, save_file

TEMPLATE = json.loads((Path(__file__).parent / "data" / "template_state_dict.json").read_text())
COURSE_SHAPES = {key: tuple(shape) for key, shape in TEMPLATE["state_dict"].items()}


class CourseLayout(nn.Module):
    """A module with exactly the tensors named in the course's template state dict.

    It stands for the course's VAE_Model when loading: `load_state_dict(strict=True)` checks
    names and shapes, which is all the course's `load_checkpoint` relies on.
    """

    def __init__(self):
        super().__init__()
        for key, shape in COURSE_SHAPES.items():
            *path, name = key.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if name in ("running_mean", "running_var", "num_batches_tracked"):
                dtype = torch.long if name == "num_batches_tracked" else torch.float
                module.register_buffer(name, torch.zeros(shape, dtype=dtype))
            else:
                module.register_parameter(name, nn.Parameter(torch.zeros(shape)))


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

    interop.main(["export", str(tmp_path / "imported"), str(tmp_path / "exported.ckpt")])
    exported = torch.load(tmp_path / "exported.ckpt", weights_only=True)
    assert sorted(exported) == sorted(TEMPLATE["checkpoint_dict_keys"])
    assert (exported["lr"], exported["tfr"], exported["last_epoch"]) == (1e-4, 0.3, 17)
    assert exported["state_dict"].keys() == original["state_dict"].keys()
    for key, tensor in original["state_dict"].items():
        assert torch.equal(exported["state_dict"][key], tensor), key


def test_exported_lab_network_loads_strictly_into_the_course_layout(tmp_path):
    model = weights_folder(tmp_path / "ours", {"preset": "lab"})
    interop.export_course(tmp_path / "ours", tmp_path / "course.ckpt")
    exported = torch.load(tmp_path / "course.ckpt", weights_only=True)
    course = CourseLayout()
    course.load_state_dict(exported["state_dict"], strict=True)
    assert {k: tuple(v.shape) for k, v in course.state_dict().items()} == COURSE_SHAPES
    for key, tensor in model.state_dict().items():
        assert torch.equal(course.state_dict()[key], tensor), key
    assert sum(p.numel() for p in course.parameters()) == 1_585_620


def test_export_of_a_training_checkpoint_carries_its_epoch_tfr_and_optimizer(tiny_run, tmp_path):
    checkpoint = tiny_run / "checkpoints" / "checkpoint-16"
    interop.export_course(checkpoint, tmp_path / "course.ckpt")
    exported = torch.load(tmp_path / "course.ckpt", weights_only=True)
    assert exported["last_epoch"] == 2 and exported["tfr"] == 0.0 and exported["lr"] == pytest.approx(1e-3)
    assert len(exported["optimizer"]["state"]) == len(exported["state_dict"]) - 3  # BatchNorm buffers have no Adam state
    tiny = CVAE(ModelConfig(**PRESETS["tiny"]))
    tiny.load_state_dict(exported["state_dict"], strict=True)


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
    assert loaded.config == model.config and not loaded.training
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    # The folder's weights also load through the training code's strict loader.
    load_weights_into(CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none")), tmp_path / "pretrained" / "model.safetensors")


def test_from_pretrained_is_strict(tmp_path):
    CVAE(ModelConfig(**PRESETS["tiny"])).save_pretrained(tmp_path / "pretrained")
    weights = tmp_path / "pretrained" / "model.safetensors"
    save_file({**load_file(weights), "stray.weight": torch.zeros(1)}, str(weights))
    with pytest.raises(RuntimeError, match="stray.weight"):
        CVAE.from_pretrained(tmp_path / "pretrained")
    CVAE.from_pretrained(tmp_path / "pretrained", strict=False)  # only when asked for
