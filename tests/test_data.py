"""The course-layout reader, the uint8 cache, windows and the epoch sampler."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_dist.config import parse_args
from cvae_dist.data import images
from cvae_dist.data.course import CourseDataset, TrainWindows, Video, WindowSampler, frame_number, sorted_pngs
from cvae_dist.errors import UserError
from support import tiny_args


def dataset(root: Path, tmp_path: Path) -> CourseDataset:
    return CourseDataset(root, 32, 64, cache_dir=tmp_path / "cache", progress=False)


def test_reads_every_split_at_the_requested_size(dataset_root, tmp_path):
    data = dataset(dataset_root, tmp_path)
    train, val, test = data.train(), data.val(), data.test()
    assert train.frames.shape == train.labels.shape == (128, 3, 32, 64)
    assert val.frames.shape == (64, 3, 32, 64)
    assert train.frames.dtype == np.uint8
    assert [s.name for s in test] == ["0", "1"]
    assert test[0].first_frame.shape == (3, 32, 64) and test[0].labels.shape == (40, 3, 32, 64)
    # Labels are mostly white, frames are not: images and labels were not swapped.
    assert (val.labels == 255).all(axis=1).mean() > 0.8 > (val.frames == 255).all(axis=1).mean()


def test_frames_are_resized_bilinearly_like_the_course(dataset_root, tmp_path):
    frames = dataset(dataset_root, tmp_path).val().frames
    with Image.open(dataset_root / "val" / "val_img" / "7.png") as image:
        expected = np.asarray(image.convert("RGB").resize((64, 32), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(frames[7], expected)


def write_png(path: Path, value: int, size=(16, 8), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, value, value) if mode == "RGB" else value).save(path)


def make_split(root: Path, names: list[str], split="val") -> None:
    for i, name in enumerate(names):
        write_png(root / split / f"{split}_img" / name, 10 * i + 10)
        write_png(root / split / f"{split}_label" / name, 255 - i)


def test_files_sort_by_number_not_lexically(tmp_path):
    folder = tmp_path / "frames"
    for name in ["frame10.png", "frame2.png", "frame1.png", "frame0.png"]:
        write_png(folder / name, 0)
    assert [p.name for p in sorted_pngs(folder)] == ["frame0.png", "frame1.png", "frame2.png", "frame10.png"]
    assert frame_number(Path("img_7_frame12.png")) == 12


def test_labels_pair_with_images_by_name(tmp_path):
    make_split(tmp_path / "root", ["2.png", "10.png", "1.png"])
    video = CourseDataset(tmp_path / "root", 4, 8, cache_dir=tmp_path / "cache", progress=False).val()
    # Written in the order 2, 10, 1 with values 10, 20, 30: numeric order is 1, 2, 10.
    assert video.frames[:, 0, 0, 0].tolist() == [30, 10, 20]
    assert video.labels[:, 0, 0, 0].tolist() == [253, 255, 254]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "val/val_label/1.png").unlink(), "val_label/1.png: label missing for image"),
        (lambda root: write_png(root / "val/val_label/9.png", 0), "val_label/9.png: label has no image"),
        (lambda root: write_png(root / "val/val_img/cover.png", 0), "cover.png: file name has no frame number"),
        (lambda root: (root / "val/val_img/2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "val_img/2.png: cannot read image"),
        (lambda root: (root / "val/val_img/2.png").write_bytes(b""), "val_img/2.png: cannot read image"),
        (lambda root: [p.unlink() for p in (root / "val/val_img").iterdir()], "val_img: no PNG frames"),
        (lambda root: shutil.rmtree(root / "val/val_label"), "val_label: folder not found"),
    ],
)
def test_broken_datasets_end_with_a_line_naming_the_file(tmp_path, damage, message):
    root = tmp_path / "root"
    make_split(root, ["0.png", "1.png", "2.png"])
    damage(root)
    with pytest.raises(UserError) as err:
        CourseDataset(root, 4, 8, cache_dir=tmp_path / "cache", progress=False).val()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_root_is_named(tmp_path):
    with pytest.raises(UserError, match="dataset folder not found"):
        CourseDataset(tmp_path / "nowhere", 32, 64)


@pytest.mark.parametrize(
    "mode, value, expected", [("L", 200, 200), ("RGBA", (40, 50, 60, 0), (40, 50, 60)), ("I;16", 65535, 255), ("I;16", 32896, 128)]
)
def test_other_image_modes_become_8_bit_rgb(tmp_path, mode, value, expected):
    path = tmp_path / "0.png"
    Image.new(mode, (8, 4), value).save(path)
    pixel = images.read_rgb(path, 4, 8)[:, 0, 0]
    assert pixel.tolist() == (list(expected) if isinstance(expected, tuple) else [expected] * 3)


def test_the_cache_decodes_each_png_once_and_notices_changes(dataset_root, tmp_path, monkeypatch):
    first = dataset(dataset_root, tmp_path).val()
    assert len(list((tmp_path / "cache").glob("val_img-*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached frame was decoded again")

    monkeypatch.setattr(images, "read_rgb", no_decoding)
    again = dataset(dataset_root, tmp_path).val()
    assert isinstance(again.frames, np.memmap)
    np.testing.assert_array_equal(first.frames, again.frames)

    monkeypatch.undo()
    copy = tmp_path / "copy"
    shutil.copytree(dataset_root / "val", copy / "val")
    dataset(copy, tmp_path).val()
    changed = copy / "val" / "val_img" / "5.png"
    write_png(changed, 0, size=(128, 64))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fresh = dataset(copy, tmp_path).val()
    assert (fresh.frames[5] == 0).all() and not (first.frames[5] == 0).all()


def test_windows_are_consecutive_and_partial_takes_the_start():
    frames = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(3, axis=1)
    video = Video(frames=frames, labels=255 - frames)
    windows = TrainWindows(video, window=16)
    assert len(windows) == 6
    clip, labels = windows[2]
    assert clip[:, 0, 0, 0].tolist() == list(range(32, 48))
    assert labels[:, 0, 0, 0].tolist() == [255 - i for i in range(32, 48)]
    assert len(TrainWindows(video, window=16, partial=0.5)) == 3
    assert len(TrainWindows(Video(frames[:10], frames[:10]), window=16)) == 0  # data.check_train_length refuses it first


def test_fast_train_covers_exactly_fast_train_epoch_epochs(dataset_root, tmp_path):
    """The course's code fast-trains two epochs more than its --fast_train_epoch says; here it is that many."""
    from cvae_dist.training import build

    args = tiny_args(dataset_root, tmp_path / "run", "--fast_train", "--fast_partial", "0.5", "--fast_train_epoch", "3")
    parts = build(parse_args(args))
    # 128 frames: 16 windows of 8 in batches of 2, half of them while fast-training.
    assert [parts.batches_in_epoch(epoch) for epoch in range(6)] == [4, 4, 4, 8, 8, 8]
    assert not (tmp_path / "run").exists()


def test_sampler_is_reproducible_per_epoch_and_fast_trains_on_the_start():
    sampler = WindowSampler(lambda epoch: 4 if epoch < 2 else 20, shuffle=True, seed=3)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert sorted(orders[0]) == sorted(orders[1]) == [0, 1, 2, 3]
    assert sorted(orders[2]) == list(range(20)) and orders[2] != orders[3]
    sampler.set_epoch(2)
    assert list(sampler) == orders[2]
    in_order = WindowSampler(lambda epoch: 5, shuffle=False, seed=3)
    assert list(in_order) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("processes", [1, 2])
def test_each_process_gathers_on_the_device_the_windows_its_loader_would_read(processes):
    """Accelerate shards the loader of window indices as it shards the loader of frames, so every
    process trains on the same windows, frames and labels with --data_on_device on as off."""
    from accelerate.data_loader import prepare_data_loader

    from cvae_dist.data.course import IndexedWindows, ResidentWindows
    from cvae_dist.training.build import training_loader

    rng = np.random.default_rng(1)
    windows = IndexedWindows(Video(*(rng.integers(0, 256, (45, 3, 8, 8), dtype=np.uint8) for _ in range(2))), window=4)
    config = parse_args(["--save_root", "x", "--batch_size", "2"])
    resident = ResidentWindows(windows, torch.device("cpu"))
    assert ResidentWindows.bytes_needed(windows) == resident.frames.nbytes + resident.labels.nbytes == 2 * 44 * 3 * 8 * 8
    for rank in range(processes):
        loaders = [
            prepare_data_loader(
                training_loader(config, windows, WindowSampler(lambda epoch: 11, True, 5), source), num_processes=processes, process_index=rank
            )
            for source in (None, resident)
        ]
        for epoch in range(2):
            for loader in loaders:
                loader.set_epoch(epoch)
            batches = list(zip(*loaders, strict=True))
            assert len(batches) == 11 // (2 * processes)
            for (frames, labels, indices), (frames_there, labels_there, indices_there) in batches:
                assert indices == indices_there
                assert torch.equal(frames, frames_there) and torch.equal(labels, labels_there)
