"""Writing a synthetic dataset in the course's layout, with its manifest and baselines.

Every video is a performance (its own RNG stream, child of ``SeedSequence([seed, split,
video])``) by a performer, so a file depends only on the seed and the settings, never on the
worker count or on other videos. With one performer (the default) the course's performer
dances in every split; with N, the train clips take turns among N performers and the val and
test videos each get a performer never seen in training.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cvae_dist.data.images import resized
from cvae_dist.data.synthetic.look import COURSE_PERFORMER, Performer, sample_performer
from cvae_dist.data.synthetic.motion import DEFAULT_FPS, MAX_FPS, MIN_FPS, Performance, performance
from cvae_dist.data.synthetic.render import render_frame, render_label
from cvae_dist.processes import running

GENERATOR = "cvae_dist.data.synthetic"
# 3: one performer in every split by default, walking across the stage, turning and crouching.
GENERATOR_VERSION = 3
DEFAULT_TRAIN_FRAMES = 6400
MIN_SIZE = 32
SPLITS = ("train", "val", "test")
MANIFEST = "synthetic.json"
# The frame size the course trains at: baselines are scored there, as a model would be.
BASELINE_SIZE = (32, 64)
_PERFORMER_STREAM = 1_000  # keeps performers' seeds apart from the videos' [seed, split, video]
_CHUNK_FRAMES = 80  # frames per worker job: small enough for a smooth progress bar


@dataclass(frozen=True)
class _Video:
    split: str
    index: int
    """Video number within the split: seeds its performance."""
    frames: int
    first_name: int
    """File name of frame 0 (train clips continue the numbering)."""
    images: int
    """How many leading frames get an image file (test: the first only)."""
    img_dir: str
    """Relative to ROOT."""
    label_dir: str
    performer: int


def performer_of(seed: int, index: int, performers: int) -> Performer:
    """Performer ``index``: the course's own when there is only one, else a random one per index."""
    if performers == 1:
        return COURSE_PERFORMER
    return sample_performer(np.random.SeedSequence([seed, _PERFORMER_STREAM, index]))


def performance_of(
    seed: int, split: str, index: int, n_frames: int, performer: Performer, aspect: float = 2.0, fps: float = DEFAULT_FPS
) -> Performance:
    """The performance of video ``index`` of ``split``: the same for a given seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))
    return performance(rng, n_frames, body=performer.body, aspect=aspect, fps=fps)


def _plan(train_frames, clip_frames, val_frames, test_sequences, test_frames, performers) -> list[_Video]:
    """Train clips take turns among the performers; val and test get unseen ones (with more than one)."""
    shared = performers == 1
    clips = []
    for k, start in enumerate(range(0, train_frames, clip_frames)):
        frames = min(clip_frames, train_frames - start)
        clips.append(_Video("train", k, frames, start, frames, "train/train_img", "train/train_label", k % performers))
    val = [_Video("val", 0, val_frames, 0, val_frames, "val/val_img", "val/val_label", 0 if shared else performers)]
    tests = [
        _Video("test", k, test_frames, 0, 1, f"test/test_img/{k}", f"test/test_label/{k}", 0 if shared else performers + 1 + k)
        for k in range(test_sequences)
    ]
    return clips + val + tests


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, compress_level=1)  # speed over size


def _render_chunk(root: str, seed: int, height: int, width: int, performers: int, fps: float, video: _Video, start: int, stop: int):
    """Write frames [start, stop) of ``video``. Returns them at `BASELINE_SIZE` for val and test
    videos (test frames are rendered for that though only the first is written), else None."""
    performer = performer_of(seed, video.performer, performers)
    moves = performance_of(seed, video.split, video.index, video.frames, performer, width / height, fps)
    scored = video.split != "train"
    small = []
    for t in range(start, stop):
        pose = moves[t]
        name = f"{video.first_name + t}.png"
        _write_png(Path(root, video.label_dir, name), render_label(pose, height, width))
        if t < video.images or scored:
            frame = render_frame(pose, performer.look, height, width)
            if t < video.images:
                _write_png(Path(root, video.img_dir, name), frame)
            if scored:
                small.append(resized(Image.fromarray(frame), *BASELINE_SIZE))
    return np.stack(small) if scored else None


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> dict[_Video, np.ndarray]:
    """Run the render jobs; returns each scored video's frames at `BASELINE_SIZE`."""
    chunks: dict[_Video, dict[int, np.ndarray]] = {}

    def collect(job, small) -> int:
        video, start, stop = job[-3:]
        if small is not None:
            chunks.setdefault(video, {})[start] = small
        return stop - start

    with tqdm(total=sum(job[-1] - job[-2] for job in jobs), unit="frame", desc="synthetic", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(collect(job, _render_chunk(*job)))
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(_render_chunk, *job): job for job in jobs}
                try:
                    for future in as_completed(futures):
                        bar.update(collect(futures[future], future.result()))
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return {video: np.concatenate([parts[k] for k in sorted(parts)]) for video, parts in chunks.items()}


def baselines(frames: np.ndarray) -> dict[str, float]:
    """Average PSNR over frames 1..T-1 of copying the first frame, and of copying the previous one."""
    import torch

    from cvae_dist.metrics import average_psnr, psnr_per_frame

    video = torch.from_numpy(frames).float() / 255
    first = psnr_per_frame(video[:1].expand_as(video), video)
    previous = psnr_per_frame(torch.cat([video[:1], video[:-1]]), video)
    return {"copy_first": round(float(average_psnr(first)), 2), "copy_previous": round(float(average_psnr(previous)), 2)}


def check_settings(*, train_frames, seed, height, width, clip_frames, val_frames, test_sequences, test_frames, performers, fps, workers) -> None:
    """Raise ValueError with a one-line message for unusable settings."""
    counts = dict(
        train_frames=train_frames,
        clip_frames=clip_frames,
        val_frames=val_frames,
        test_sequences=test_sequences,
        test_frames=test_frames,
        performers=performers,
    )
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("val_frames", "test_frames"):
        if counts[name] < 2:
            raise ValueError(f"{name} must be at least 2 (a given frame and one to predict), got {counts[name]!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(fps, (int, float)) and MIN_FPS <= fps <= MAX_FPS):
        raise ValueError(f"fps must be a number from {MIN_FPS} to {MAX_FPS}, got {fps!r}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")


def _settings_manifest(settings: dict, videos: list[_Video]) -> dict:
    """What identifies a dataset: generator, version, settings and counts (the baselines follow from them)."""
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        **settings,
        "counts": {
            "train_clips": sum(v.split == "train" for v in videos),
            "images": sum(v.images for v in videos),
            "labels": sum(v.frames for v in videos),
        },
    }


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _same_dataset(found: dict | None, wanted: dict) -> bool:
    return found is not None and {k: v for k, v in found.items() if k != "baselines"} == wanted


def _why_not_reused(found: dict | None) -> str:
    if found is None or found.get("generator") != GENERATOR:
        return "was not made by this generator"
    if found.get("version") != GENERATOR_VERSION:
        return f"was made by generator version {found.get('version')} (this is version {GENERATOR_VERSION})"
    return "was made with other settings"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def generate_dataset(
    root,
    *,
    train_frames=DEFAULT_TRAIN_FRAMES,
    seed=0,
    height=128,
    width=256,
    clip_frames=320,
    val_frames=630,
    test_sequences=5,
    test_frames=630,
    performers=1,
    fps=DEFAULT_FPS,
    workers=None,
    overwrite=False,
    replace_outdated=False,
    progress=True,
) -> Path:
    """Write the dataset to ``root`` and return its path.

    An existing ``root`` made with the same settings by this generator version is reused as is.
    Any other existing ``root`` raises FileExistsError, unless ``overwrite``; ``replace_outdated``
    replaces only a dataset this generator made (another version or other settings), with a note.
    The data are built in a sibling temporary folder and renamed into place, so an interrupted
    run never leaves a half-written ``root``.
    """
    settings = dict(
        seed=seed,
        train_frames=train_frames,
        clip_frames=clip_frames,
        val_frames=val_frames,
        test_sequences=test_sequences,
        test_frames=test_frames,
        performers=performers,
        fps=fps,
        height=height,
        width=width,
    )
    check_settings(workers=workers, **settings)
    root = Path(os.path.abspath(root))  # "." or "data/" still has a name to derive the staging folder from
    videos = _plan(train_frames, clip_frames, val_frames, test_sequences, test_frames, performers)
    manifest = _settings_manifest(settings, videos)
    if root.exists():
        found = read_manifest(root)
        if _same_dataset(found, manifest):
            if progress:
                print(f"{root}: synthetic dataset with these settings already exists, reusing it")
            return root
        ours = found is not None and found.get("generator") == GENERATOR
        if not (overwrite or (replace_outdated and ours)):
            raise FileExistsError(f"{root} already exists and {_why_not_reused(found)}; pass --overwrite (overwrite=True) to replace it")
        if progress:
            print(f"{root} {_why_not_reused(found)}: making it again")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(root)
    staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    try:
        _build(staging, videos, manifest, settings, workers or os.cpu_count() or 1, progress)
        _move_into_place(staging, root)
    except BaseException:
        if staging.exists():
            _remove(staging)
        raise
    return root


def _remove_abandoned_staging(root: Path) -> None:
    """Staging folders of earlier runs whose process is gone (killed before it could clean up)."""
    for staging in root.parent.glob(f"{root.name}.tmp-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not running(int(pid)):
            _remove(staging)


def _move_into_place(staging: Path, root: Path) -> None:
    if not root.exists():
        staging.rename(root)
        return
    retired = root.with_name(f"{root.name}.old-{os.getpid()}")
    root.rename(retired)
    try:
        staging.rename(root)
    except BaseException:
        retired.rename(root)  # never end up with neither the old nor the new data
        raise
    _remove(retired)


def _build(staging: Path, videos: list[_Video], manifest: dict, settings: dict, workers: int, progress: bool) -> None:
    for video in videos:
        (staging / video.img_dir).mkdir(parents=True, exist_ok=True)
        (staging / video.label_dir).mkdir(parents=True, exist_ok=True)
    render = (str(staging), *(settings[k] for k in ("seed", "height", "width", "performers", "fps")))
    jobs = [(*render, video, start, min(start + _CHUNK_FRAMES, video.frames)) for video in videos for start in range(0, video.frames, _CHUNK_FRAMES)]
    scored = _run_jobs(jobs, min(workers, len(jobs)), progress)
    manifest = {
        **manifest,
        "baselines": {
            "size": list(BASELINE_SIZE),
            "val": baselines(next(frames for video, frames in scored.items() if video.split == "val")),
            "test": [baselines(scored[video]) for video in videos if video.split == "test"],
        },
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
