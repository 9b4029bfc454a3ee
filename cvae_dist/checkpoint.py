"""Where checkpoints live in a run folder, and loading weights back for evaluation.

```
SAVE_ROOT/config.yaml                       the run's resolved settings
SAVE_ROOT/checkpoints/checkpoint-<step>/    Accelerate save_state (model.safetensors, optimizer,
                                            scheduler, RNG, training state) + config.yaml
SAVE_ROOT/best/                             model.safetensors + config.yaml of the best validation PSNR
```
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from cvae_dist.config import Config, load_config_file, save_config_file
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE

CHECKPOINTS = "checkpoints"
BEST = "best"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(save_root: str | Path, step: int) -> Path:
    return Path(save_root) / CHECKPOINTS / f"checkpoint-{step}"


def list_checkpoints(save_root: str | Path) -> list[Path]:
    """A run's checkpoint folders, oldest first (by optimizer step, not by name)."""
    folder = Path(save_root) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def resolve_resume(save_root: str | Path, resume_from: str) -> Path:
    """--resume_from_checkpoint: a checkpoint folder, or 'latest' in save_root."""
    if resume_from == "latest":
        found = list_checkpoints(save_root)
        if not found:
            raise UserError(f"--resume_from_checkpoint latest: no checkpoint in {Path(save_root) / CHECKPOINTS}")
        return found[-1]
    path = Path(resume_from)
    if not (path / WEIGHTS).is_file():
        raise UserError(f"--resume_from_checkpoint {path}: not a checkpoint folder (no {WEIGHTS})")
    return path


def rotate(save_root: str | Path, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond the newest `keep`."""
    if keep is None:
        return
    for old in list_checkpoints(save_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_config(config: Config, folder: Path) -> None:
    save_config_file(config, folder / CONFIG)


def find_weights(path: str | Path) -> tuple[Path, Path]:
    """A weights file and its config.yaml from a checkpoint folder, a `best` folder, a run
    folder (its best weights, else its latest checkpoint) or a model.safetensors file."""
    path = Path(path)
    if path.is_file():
        folder, weights = path.parent, path
    elif (path / WEIGHTS).is_file():
        folder, weights = path, path / WEIGHTS
    elif (path / BEST / WEIGHTS).is_file():
        folder, weights = path / BEST, path / BEST / WEIGHTS
    elif list_checkpoints(path):
        folder = list_checkpoints(path)[-1]
        weights = folder / WEIGHTS
    else:
        raise UserError(f"{path}: no {WEIGHTS} here, nor a {BEST}/ or {CHECKPOINTS}/ folder of a run")
    config = folder / CONFIG
    if not config.is_file():
        raise UserError(f"{config}: missing; it records which network the weights in {folder} belong to")
    return weights, config


def load_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise UserError(f"{weights}: cannot read weights ({err})") from None


def load_weights_into(model: CVAE, weights: Path) -> None:
    """Strictly load a safetensors file into a model, naming the first mismatch on failure."""
    state = load_state_dict(weights)
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and expected[key].shape != tensor.shape:
            raise UserError(
                f"{weights}: '{key}' has shape {tuple(tensor.shape)}, this network expects "
                f"{tuple(expected[key].shape)} (weights of another --preset or width?)"
            )
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        key = sorted(missing or unexpected)[0]
        raise UserError(f"{weights}: {'missing' if missing else 'unexpected'} key '{key}' ({len(missing)} missing, {len(unexpected)} unexpected)")
    model.load_state_dict(state)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CVAE, Config]:
    """The trained network of a checkpoint, run or weights file, in eval mode."""
    weights, config_file = find_weights(path)
    config = load_config_file(config_file)
    model = CVAE(config.model)
    load_weights_into(model, weights)
    return model.to(device).eval(), config
