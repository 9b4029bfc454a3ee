"""The course's dataset layout, read exactly.

```
ROOT/train/train_img/*.png     ROOT/train/train_label/*.png    one long video
ROOT/val/val_img/*.png         ROOT/val/val_label/*.png        one 630-frame video
ROOT/test/test_img/<i>/*.png   ROOT/test/test_label/<i>/*.png  first frame given, 630 labels
```
Files sort by the number in their name (`frame12.png`, `12.png`), never lexically; a label has
its image's file name. Frames come back as uint8 (…, 3, H, W); training converts them to
floats in [0, 1] on its device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cvae_dist.data.images import default_cache_dir, load_frames
from cvae_dist.errors import UserError

_NUMBER = re.compile(r"\d+")


def frame_number(path: Path) -> int:
    """The last number in a file name: `frame12.png` -> 12."""
    numbers = _NUMBER.findall(path.stem)
    if not numbers:
        raise UserError(f"{path}: file name has no frame number (expected names like 12.png or frame12.png)")
    return int(numbers[-1])


def sorted_pngs(folder: Path) -> list[Path]:
    """The PNG files of a folder in frame-number order."""
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    paths = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")]
    if not paths:
        raise UserError(f"{folder}: no PNG frames in this folder")
    paths.sort(key=frame_number)
    for before, after in zip(paths, paths[1:]):
        if frame_number(before) == frame_number(after):
            raise UserError(f"{after}: same frame number as {before.name}")
    return paths


def paired(image_dir: Path, label_dir: Path) -> tuple[list[Path], list[Path]]:
    """Images and the same-named labels, checking that each image has exactly one label."""
    images = sorted_pngs(image_dir)
    labels = {p.name: p for p in sorted_pngs(label_dir)}
    missing = [p for p in images if p.name not in labels]
    if missing:
        raise UserError(f"{label_dir / missing[0].name}: label missing for image {missing[0]} ({len(missing)} missing in all)")
    extra = sorted(set(labels) - {p.name for p in images}, key=lambda name: frame_number(Path(name)))
    if extra:
        raise UserError(f"{label_dir / extra[0]}: label has no image in {image_dir} ({len(extra)} unmatched labels)")
    return images, [labels[p.name] for p in images]


@dataclass
class Video:
    """A video's frames and pose labels as uint8 arrays, (T, 3, H, W) each."""

    frames: np.ndarray
    labels: np.ndarray


@dataclass
class TestSequence:
    """A test video: its given first frame (3, H, W) and all its labels (T, 3, H, W)."""

    name: str
    first_frame: np.ndarray
    labels: np.ndarray


class CourseDataset:
    """Reads the splits of a dataset root, resized to (height, width), through the uint8 cache."""

    def __init__(self, root: str | Path, height: int, width: int, cache_dir: Path | None = None, progress: bool = True):
        self.root = Path(root)
        try:
            found = self.root.is_dir()
        except OSError as err:  # a name too long, a loop of links
            raise UserError(f"--DR {self.root}: {err.strerror}") from None
        if not found:
            raise UserError(f"--DR {self.root}: dataset folder not found")
        self.height, self.width = height, width
        self.cache_dir = cache_dir
        self.progress = progress

    def _load(self, paths: list[Path], name: str) -> np.ndarray:
        cache_dir = self.cache_dir or default_cache_dir(self.root)
        return load_frames(paths, self.height, self.width, cache_dir, name, progress=self.progress)

    def _folders(self, split: str) -> tuple[Path, Path]:
        return self.root / split / f"{split}_img", self.root / split / f"{split}_label"

    def _video(self, split: str) -> Video:
        images, labels = paired(*self._folders(split))
        return Video(frames=self._load(images, f"{split}_img"), labels=self._load(labels, f"{split}_label"))

    def frame_count(self, split: str) -> tuple[Path, int]:
        """The image folder of the train or val video and its number of frames, from the file names
        alone: lengths can be checked before any frame is read."""
        image_dir, label_dir = self._folders(split)
        return image_dir, len(paired(image_dir, label_dir)[0])

    def train(self) -> Video:
        return self._video("train")

    def val(self) -> Video:
        return self._video("val")

    def test(self, labels_per_sequence: int | None = None) -> list[TestSequence]:
        """The test sequences, each with the same number of labels, since they are rolled out in one
        batch: `labels_per_sequence` (the course's 630), or else as many as the first one has."""
        image_root, label_root = self.root / "test" / "test_img", self.root / "test" / "test_label"
        if not image_root.is_dir():
            raise UserError(f"{image_root}: folder not found")
        names = sorted((p.name for p in image_root.iterdir() if p.is_dir()), key=lambda n: frame_number(Path(n)))
        if not names:
            raise UserError(f"{image_root}: no test sequence folders")
        sequences = []
        needed = labels_per_sequence
        for name in names:
            first = sorted_pngs(image_root / name)[0]
            labels = sorted_pngs(label_root / name)
            needed = needed or len(labels)
            if len(labels) != needed:
                like = "" if labels_per_sequence else f" like {label_root / names[0]}, as all are rolled out in one batch"
                raise UserError(f"{label_root / name}: {len(labels)} labels, a test sequence needs {needed}{like}")
            sequences.append(
                TestSequence(
                    name=name,
                    first_frame=self._load([first], f"test_img_{name}")[0],
                    labels=self._load(labels, f"test_label_{name}"),
                )
            )
        return sequences


class TrainWindows(Dataset):
    """Consecutive, non-overlapping windows of `window` frames cut from the training video."""

    def __init__(self, video: Video, window: int, partial: float = 1.0):
        self.video, self.window = video, window
        self.num_windows = int(len(video.frames) * partial) // window

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = slice(index * self.window, (index + 1) * self.window)
        return torch.from_numpy(np.array(self.video.frames[span])), torch.from_numpy(np.array(self.video.labels[span]))


class IndexedWindows(TrainWindows):
    """Training windows that also return their index, which keys each window's latent noise."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return (*super().__getitem__(index), index)


def collate_windows(samples):
    """Stack windows; the window indices stay a list of ints so they never travel to the device."""
    frames, labels, indices = zip(*samples)
    return torch.stack(frames), torch.stack(labels), list(indices)


class ResidentWindows:
    """The training windows held on a device as uint8 tensors (windows, frames, 3, H, W), batched there.

    `collate` turns a batch of window indices into (frames, labels, indices) as `collate_windows`
    does from loaded windows, with the same values; a loader of indices needs no workers, and no
    frame crosses from the host during training."""

    def __init__(self, windows: TrainWindows, device: torch.device):
        count, length = len(windows), windows.window

        def resident(frames: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(frames[: count * length])).to(device).unflatten(0, (count, length))

        self.frames, self.labels = resident(windows.video.frames), resident(windows.video.labels)

    @staticmethod
    def bytes_needed(windows: TrainWindows) -> int:
        """What the windows take on the device."""
        return 2 * len(windows) * windows.window * math.prod(windows.video.frames.shape[1:])

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        index = torch.tensor(indices)
        if self.frames.is_cuda:  # from pinned memory the copy is queued; from pageable memory the host would wait for the GPU
            index = index.pin_memory()
        index = index.to(self.frames.device, non_blocking=True)
        return self.frames[index], self.labels[index], list(indices)


class WindowSampler(Sampler[int]):
    """The window indices of one epoch, reproducible from (seed, epoch).

    `windows_in_epoch(epoch)` says how many windows, from the start of the video, the epoch uses
    (fewer while fast-training); they are shuffled by a generator seeded with (seed, epoch).
    """

    def __init__(self, windows_in_epoch: Callable[[int], int], shuffle: bool, seed: int):
        self.windows_in_epoch, self.shuffle, self.seed = windows_in_epoch, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.windows_in_epoch(self.epoch)

    def __iter__(self):
        count = len(self)
        if not self.shuffle:
            return iter(range(count))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(count, generator=generator).tolist())


def to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1]."""
    return frames.float().div_(255)
