"""Checkpoint files: where they live, writing them safely, checking them, finding one to resume, loading weights.

```
SAVE_ROOT/config.yaml                       the run's resolved settings
SAVE_ROOT/checkpoints/checkpoint-<step>/    Accelerate save_state (model.safetensors, optimizer,
                                            scheduler, RNG, training state) + config.yaml + config.json + manifest.json
SAVE_ROOT/best/                             model.safetensors + config.yaml + config.json + manifest.json
                                            of the best validation PSNR
```

Every weights folder (these, and `interop import`'s) is also a save_pretrained folder: its
config.json is the network's settings as huggingface_hub writes them, so `CVAE.from_pretrained`
reads it. `find_weights` reads both layouts, and folders written before config.json was added.
Which checkpoint a run starts from is the run folder's decision (training/run_folder.py).

A checkpoint is written into a hidden staging folder (`.checkpoint-<step>.partial`), sealed with
`manifest.json` (step, epoch, why it was written, the run's settings hash, and the size and
SHA-256 of every file), flushed to disk and only then renamed into place. A run killed at any
moment therefore leaves either a complete checkpoint or a staging folder that the next start
removes; a checkpoint damaged later (a truncated copy, a full disk, bit rot) fails its manifest
check, and `--resume_from_checkpoint latest` falls back to the newest intact one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cvae_dist.config import Config, from_flat, load_config_file, save_config_file
from cvae_dist.errors import UserError
from cvae_dist.model import CVAE
from cvae_dist.tracking import RUN_IDS, TB_PROJECT

CHECKPOINTS = "checkpoints"
BEST = "best"
WEIGHTS = "model.safetensors"
# The average of the weights (--use_ema) in a training checkpoint: what evaluation, export and --ckpt_path use.
EMA_WEIGHTS = "ema.safetensors"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
# The network's settings as huggingface_hub's save_pretrained writes them, so that CVAE.from_pretrained reads a run's folders too.
MODEL_CONFIG = "config.json"
EVAL = "eval"
# --profile_steps writes its trace and table here.
PROFILE = "profile"
MANIFEST_FORMAT = 1
_STEP = re.compile(r"^checkpoint-(\d+)$")
_STAGING, _TRASH = ".partial", ".old"


def checkpoint_dir(save_root: str | Path, step: int) -> Path:
    return Path(save_root) / CHECKPOINTS / f"checkpoint-{step}"


def list_checkpoints(save_root: str | Path) -> list[Path]:
    """A run's checkpoint folders, oldest first (by optimizer step, not by name)."""
    folder = Path(save_root) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def run_identity(config: Config) -> str:
    """The hash of the settings that shape a run's result: bookkeeping settings (config.Option) do not make another run."""
    return config.digest(results_only=True)


# ---- writing ---------------------------------------------------------------------------------


def staging_dir(folder: Path) -> Path:
    """The hidden folder a checkpoint is written into before it is renamed to `folder`."""
    return folder.parent / f".{folder.name}{_STAGING}"


def clear_staging(folder: Path) -> Path:
    """An empty staging folder for `folder` (a leftover of a killed write is removed)."""
    staging = staging_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def seal(staging: Path, folder: Path, config: Config, *, step: int, epoch: int, reason: str) -> None:
    """Add the configs (write_weights_config) and the manifest to a written staging folder, flush it, and rename it to `folder`."""
    write_weights_config(config, staging)
    files = {path.relative_to(staging).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256(path)} for path in _files(staging)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "step": step,
        "epoch": epoch,
        "reason": reason,
        "config_digest": run_identity(config),
        "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for path in [*_files(staging), staging]:
        _fsync(path)
    _replace_folder(staging, folder)


def _replace_folder(new: Path, folder: Path) -> None:
    # Directories cannot be swapped in one atomic call: the old one is moved aside first, and
    # recover() puts it back if the process dies between the two renames.
    trash = folder.parent / f".{folder.name}{_TRASH}"
    shutil.rmtree(trash, ignore_errors=True)
    if folder.exists():
        os.rename(folder, trash)
    os.rename(new, folder)
    _fsync(folder.parent)
    shutil.rmtree(trash, ignore_errors=True)


def rotate(save_root: str | Path, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond the newest `keep` (each renamed away first, so none is ever half-deleted)."""
    if keep is None:
        return
    for old in list_checkpoints(save_root)[:-keep]:
        trash = old.parent / f".{old.name}{_TRASH}"
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def recover(save_root: str | Path) -> list[str]:
    """Undo what a run killed while writing left behind; returns a note per thing done."""
    notes = []
    for parent in (Path(save_root), Path(save_root) / CHECKPOINTS):
        if not parent.is_dir():
            continue
        for path in sorted(parent.iterdir()):
            if path.name.startswith(".") and path.name.endswith(_STAGING):
                shutil.rmtree(path, ignore_errors=True)
                notes.append(f"note: removed {path}, an unfinished checkpoint write")
            elif path.name.startswith(".") and path.name.endswith(_TRASH):
                original = parent / path.name[1 : -len(_TRASH)]
                if original.exists():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.rename(path, original)
                    notes.append(f"note: restored {original}, which a killed run was replacing")
    return notes


def write_config(config: Config, folder: Path) -> None:
    """config.yaml, written under a temporary name and renamed so that it is never half-written."""
    temporary = folder / f".{CONFIG}.tmp"
    save_config_file(config, temporary)
    os.replace(temporary, folder / CONFIG)


def write_weights_config(config: Config, folder: Path) -> None:
    """What every weights folder carries beside model.safetensors: config.yaml, the run's settings, which
    our loaders read, and config.json, the network's, as save_pretrained writes it for CVAE.from_pretrained."""
    write_config(config, folder)
    (folder / MODEL_CONFIG).write_text(json.dumps(dataclasses.asdict(config.model), sort_keys=True, indent=2) + "\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync(path: Path) -> None:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some systems; their renames are still ordered
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# ---- checking --------------------------------------------------------------------------------


def verify(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None if every file matches its manifest.

    The training state that Accelerate would unpickle with weights_only=False is also checked to
    load with weights_only=True, so a checkpoint can never run code when it is resumed.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST}: not a complete cvae-dist checkpoint"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__}: {err})"
    for name, expected in files.items():
        problem = _file_problem(folder / name, expected)
        if problem:
            return f"{name} {problem}"
    for pickled in sorted(folder.glob("custom_checkpoint_*.pkl")):
        try:
            torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError and others for foreign objects
            culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
            what = f"holds {culprit.group(1)}, which" if culprit else "is something"
            return f"{pickled.name} {what} torch.load(weights_only=True) refuses to unpickle (it could run code)"
    return None


def _file_problem(path: Path, expected: dict) -> str | None:
    if not path.is_file():
        return f"is missing (listed in {MANIFEST})"
    size = path.stat().st_size
    if size != expected["bytes"]:
        return f"has {size:,} bytes, its manifest says {expected['bytes']:,} (truncated or replaced)"
    if sha256(path) != expected["sha256"]:
        return "does not match its SHA-256 in the manifest (corrupted)"
    return None


def check_compatible(expected: dict[str, torch.Tensor], weights: Path) -> None:
    """Raise a one-line UserError unless `weights` has exactly the keys and shapes of `expected`.

    Reads only the safetensors header, so it is cheap to call before loading."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise UserError(f"{weights}: cannot read weights ({err})") from None
    for key, shape in shapes.items():
        if key in expected and tuple(expected[key].shape) != shape:
            raise UserError(
                f"{weights}: '{key}' has shape {shape}, this network expects {tuple(expected[key].shape)} (weights of another --preset or width?)"
            )
    missing, unexpected = set(expected) - set(shapes), set(shapes) - set(expected)
    if missing or unexpected:
        key = sorted(missing or unexpected)[0]
        raise UserError(f"{weights}: {'missing' if missing else 'unexpected'} key '{key}' ({len(missing)} missing, {len(unexpected)} unexpected)")


# ---- finding a checkpoint to resume, and clearing a run ---------------------------------------------


def resolve_resume(save_root: str | Path, resume_from: str) -> tuple[Path | None, list[str]]:
    """--resume_from_checkpoint: a checkpoint folder, or 'latest' in save_root.

    'latest' is the newest intact checkpoint; damaged newer ones are reported and skipped. With
    no checkpoint at all it starts from the beginning, so a requeued job that had not reached
    its first checkpoint simply runs again. Returns the folder (or None) and notes to print.
    """
    if resume_from != "latest":
        path = Path(resume_from)
        if not path.is_dir():
            raise UserError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
        problem = verify(path)
        if problem:
            raise UserError(f"--resume_from_checkpoint {path}: {problem}")
        return path, []
    found = list_checkpoints(save_root)
    if not found:
        return None, [f"note: no checkpoint in {Path(save_root) / CHECKPOINTS} yet: starting from the beginning"]
    notes = []
    for folder in reversed(found):
        problem = verify(folder)
        if problem is None:
            return folder, notes
        notes.append(f"warning: {folder} is damaged ({problem}); trying the checkpoint before it")
    raise UserError(
        f"--resume_from_checkpoint latest: none of the {len(found)} checkpoints in {Path(save_root) / CHECKPOINTS} is intact ({found[-1].name}: {verify(found[-1])})"
    )


def clear_run(save_root: Path) -> list[str]:
    """Remove what a run wrote to save_root (nothing else); returns the names removed."""
    removed = []
    for name in (CHECKPOINTS, BEST, EVAL, PROFILE, TB_PROJECT, RUN_IDS, CONFIG):
        path = save_root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name + ("/" if name not in (CONFIG, RUN_IDS) else ""))
    return removed


# ---- loading weights for evaluation and fine-tuning --------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Trained weights found on disk, and the network they belong to."""

    file: Path
    """The model.safetensors file, checked against its folder's manifest where there is one."""
    config: Config
    """The settings of the run that wrote them (config.yaml), or for a folder that only
    save_pretrained wrote (config.json), its network's with every other setting at its default."""

    def model(self, device: str | torch.device = "cpu") -> CVAE:
        """The network, holding these weights, in eval mode."""
        model = CVAE(self.config.model)
        load_weights_into(model, self.file)
        return model.to(device).eval()


def find_weights(path: str | Path, flag: str = "") -> Weights:
    """The weights of a checkpoint folder (its average of the weights if it has one), a `best` folder, a run
    folder (its best weights, else its latest checkpoint), a save_pretrained folder or a safetensors file: the one place that
    knows the layouts. A folder's manifest, when there is one, must vouch for the weights. Errors
    about `path` itself name the `flag` it was given with."""
    path = Path(path)
    named = f"{flag} {path}".lstrip()
    try:
        is_file = path.is_file()
    except OSError as err:  # a name too long, a loop of links
        raise UserError(f"{named}: {err.strerror}") from None
    if is_file:
        folder, weights = path.parent, path
    elif (path / WEIGHTS).is_file():
        folder, weights = path, _preferred_weights(path)
    elif (path / BEST / WEIGHTS).is_file():
        folder, weights = path / BEST, path / BEST / WEIGHTS
    elif list_checkpoints(path):
        folder = list_checkpoints(path)[-1]
        weights = _preferred_weights(folder)
    elif path.is_dir():
        raise UserError(f"{named}: no {WEIGHTS} here, nor a {BEST}/ or {CHECKPOINTS}/ folder of a run")
    else:
        raise UserError(f"{named}: no such file or folder")
    if (folder / MANIFEST).is_file():
        try:
            expected = json.loads((folder / MANIFEST).read_text())["files"].get(weights.name)
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{folder / MANIFEST}: unreadable") from None
        problem = _file_problem(weights, expected) if expected else None
        if problem:
            raise UserError(f"{weights}: {problem}")
    return Weights(weights, _weights_config(folder))


def _preferred_weights(folder: Path) -> Path:
    """A checkpoint's averaged weights where --use_ema kept them (best/ holds the average already), else its model's."""
    return folder / EMA_WEIGHTS if (folder / EMA_WEIGHTS).is_file() else folder / WEIGHTS


def _weights_config(folder: Path) -> Config:
    """config.yaml, which has every setting, else the network's settings in save_pretrained's config.json."""
    if (folder / CONFIG).is_file():
        return load_config_file(folder / CONFIG)
    if not (folder / MODEL_CONFIG).is_file():
        raise UserError(f"{folder / CONFIG}: missing (nor is there a {MODEL_CONFIG}); it records which network the weights in {folder} belong to")
    try:
        settings = json.loads((folder / MODEL_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{folder / MODEL_CONFIG}: unreadable ({err})") from None
    return from_flat(settings, str(folder / MODEL_CONFIG))


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file is a one-line error."""
    try:
        return load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise UserError(f"{weights}: cannot read weights ({err})") from None


def load_weights_into(model: CVAE, weights: Path) -> None:
    """Strictly load a safetensors file into a model, naming the first mismatch on failure."""
    check_compatible(model.state_dict(), weights)
    model.load_state_dict(read_weights(weights))


def load_model(path: str | Path, device: str | torch.device = "cpu", flag: str = "") -> tuple[CVAE, Config]:
    """The trained network of a checkpoint, run, save_pretrained folder or weights file, in eval mode, and
    its settings (`flag`: see find_weights). Every command that rolls trained weights out loads them here."""
    weights = find_weights(path, flag)
    return weights.model(device), weights.config
