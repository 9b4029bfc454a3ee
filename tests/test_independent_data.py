"""The independent generator of tests/independent_dataset.py: the course layout, read by the package, no shared code."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

import independent_dataset
from cvae_dist.data.course import CourseDataset
from cvae_dist.metrics import average_psnr, psnr_per_frame


def test_it_imports_nothing_from_the_package():
    tree = ast.parse(Path(independent_dataset.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("cvae_dist") for name in modules)


def test_the_package_reads_its_course_layout(tmp_path):
    root = independent_dataset.generate(tmp_path / "independent", train_frames=48, clip_frames=24, val_frames=120, test_sequences=2, test_frames=10)
    data = CourseDataset(root, 32, 64, cache_dir=tmp_path / "cache", progress=False)
    train, val, test = data.train(), data.val(), data.test()
    assert train.frames.shape == (48, 3, 32, 64) and val.labels.shape == (120, 3, 32, 64)
    assert [len(sequence.labels) for sequence in test] == [10, 10]
    assert sorted(p.name for p in (root / "val" / "val_img").iterdir())[:2] == ["frame0.png", "frame1.png"]
    # One performer who moves: copying the first frame falls behind, consecutive frames stay close.
    frames = torch.from_numpy(np.array(val.frames)).float() / 255
    copy_first = float(average_psnr(psnr_per_frame(frames[:1].expand_as(frames), frames)))
    copy_previous = float(average_psnr(psnr_per_frame(torch.cat([frames[:1], frames[:-1]]), frames)))
    assert 12 < copy_first < copy_previous - 5
