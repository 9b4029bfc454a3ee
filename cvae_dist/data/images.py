"""Decoding PNG frames once into a uint8 cache, so that no epoch decodes an image again.

A split's frames are decoded, converted to RGB and resized (bilinear, as the course's
torchvision `Resize` does on PIL images) into one (N, 3, H, W) uint8 `.npy` file, memory-mapped
on later use. The cache's name hashes the file list, sizes, modification times and target size,
so editing, adding or removing a frame builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cvae_dist.errors import UserError, disk_full

CACHE_VERSION = 1


def read_rgb(path: Path, height: int, width: int) -> np.ndarray:
    """One image file -> (3, H, W) uint8, resized bilinearly."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb8(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: cannot read image ({err})") from None
    return resized(rgb, height, width)


def resized(rgb: Image.Image, height: int, width: int) -> np.ndarray:
    """An RGB image -> (3, H, W) uint8 at the given size (bilinear, as the course's Resize)."""
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB: greyscale is repeated, alpha dropped, 16-bit scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL's own convert clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8))
    return image.convert("RGB")


def cache_key(paths: list[Path], height: int, width: int) -> str:
    stats = []
    for path in paths:
        stat = path.stat()
        stats.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"version": CACHE_VERSION, "size": [height, width], "files": stats})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def default_cache_dir(root: Path) -> Path:
    """Beside the dataset when it is writable, else in the user's cache folder."""
    beside = root / ".cvae_cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cvae_dist"
    home.mkdir(parents=True, exist_ok=True)
    return home


def load_frames(paths: list[Path], height: int, width: int, cache_dir: Path, name: str, progress: bool = True) -> np.ndarray:
    """All `paths` as one (N, 3, H, W) uint8 array, decoded once and memory-mapped afterwards."""
    target = cache_dir / f"{name}-{len(paths)}x{height}x{width}-{cache_key(paths, height, width)}.npy"
    cached = open_cache(target, (len(paths), 3, height, width))
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    frames = decode_all(paths, height, width, desc=f"decoding {name}", progress=progress)
    # Written under a temporary name and renamed, so a reader never sees half a cache.
    handle = tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npy.tmp", delete=False)
    try:
        with handle:
            np.save(handle, frames)
        os.chmod(handle.name, 0o644)  # readable like the dataset beside it, not private as a temporary file is
        os.replace(handle.name, target)
    except BaseException as err:  # a full disk, or a stop signal
        Path(handle.name).unlink(missing_ok=True)
        full = disk_full(
            err, cache_dir, f"the frame cache of {name}", "nothing was trained yet; free some space (or set XDG_CACHE_HOME) and run again"
        )
        if full is not None:
            raise full from None
        raise
    return np.load(target, mmap_mode="r")


def open_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached frames at `path`, memory-mapped; None if there are none, or (with a note) if the
    file is cut short or is not frames of `shape`, so that it is built again."""
    if not path.exists():
        return None
    try:
        frames = np.load(path, mmap_mode="r")
        problem = None if frames.shape == shape and frames.dtype == np.uint8 else f"holds {frames.dtype} {frames.shape}, not uint8 {shape}"
    except (ValueError, OSError, EOFError) as err:  # a truncated file cannot be mapped
        problem = str(err)
    if problem is None:
        return frames
    # Not removed here: the rebuilt cache replaces it in one rename, as any cache is written.
    print(f"note: {path}: damaged frame cache ({problem}); building it again", file=sys.stderr, flush=True)
    return None


def decode_all(paths: list[Path], height: int, width: int, desc: str, progress: bool) -> np.ndarray:
    frames = np.empty((len(paths), 3, height, width), dtype=np.uint8)

    def decode(index: int) -> None:
        frames[index] = read_rgb(paths[index], height, width)

    # PIL releases the GIL while it inflates and resizes, so threads use every core.
    pool = ThreadPoolExecutor(max_workers=os.cpu_count())
    try:
        for _ in tqdm(pool.map(decode, range(len(paths))), total=len(paths), desc=desc, disable=not progress, unit="img"):
            pass
    finally:
        # On a stop signal or a bad image, the images not yet started are dropped, not decoded first.
        pool.shutdown(cancel_futures=True)
    return frames
