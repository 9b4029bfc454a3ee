"""Datasets in the course's layout: reading, caching, and the built-in synthetic dance set."""

from __future__ import annotations

from pathlib import Path

from cvae_dist.config import DataConfig
from cvae_dist.data.lengths import check_train_length, val_length

__all__ = ["SYNTHETIC_ROOT", "check_train_length", "dataset_root", "val_length"]

SYNTHETIC_ROOT = Path("data")


def dataset_root(config: DataConfig, progress: bool = True) -> Path:
    """--DR, or the synthetic dataset under ./data, generated the first time it is needed."""
    if config.DR is not None:
        return Path(config.DR)
    from cvae_dist.data.synthetic import generate_dataset

    root = SYNTHETIC_ROOT / f"synthetic-{config.synthetic_train_frames}"
    # The folder is this package's own cache: one made by another generator version is made again.
    return generate_dataset(root, train_frames=config.synthetic_train_frames, replace_outdated=True, progress=progress)
