"""Tests of the synthetic dance-video generator (small datasets, a few seconds in all)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_dist.data import synthetic
from cvae_dist.data.course import CourseDataset
from cvae_dist.metrics import average_psnr, psnr_per_frame

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(train_frames=96, clip_frames=48, val_frames=40, test_frames=40, test_sequences=2, height=64, width=128, progress=False)


def _generate(root, **overrides):
    return synthetic.generate_dataset(root, **{**SMALL, "workers": 1, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("synthetic") / "data")


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _names(folder: Path) -> list:
    return sorted((p.name for p in folder.iterdir()), key=lambda name: int(name.split(".")[0]))


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _frames(n):
    return [f"{t}.png" for t in range(n)]


def _saturation(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(float)
    return (pixels.max(-1) - pixels.min(-1)) / np.maximum(pixels.max(-1), 1)


# --------------------------------------------------------------------------- layout


def test_layout_names_and_counts(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == ["synthetic.json", "test", "train", "val"]
    for split, n in (("train", 96), ("val", 40)):
        assert _names(dataset / split / f"{split}_img") == _frames(n)
        assert _names(dataset / split / f"{split}_label") == _frames(n)
    assert sorted(p.name for p in (dataset / "test" / "test_img").iterdir()) == ["0", "1"]
    for i in range(2):
        assert _names(dataset / "test" / "test_img" / str(i)) == ["0.png"]
        assert _names(dataset / "test" / "test_label" / str(i)) == _frames(40)
    assert not list(dataset.parent.glob("*.tmp-*"))


def test_images_are_rgb8_of_requested_size(dataset):
    for path in [*dataset.rglob("0.png"), dataset / "train/train_img/95.png", dataset / "val/val_label/39.png"]:
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("RGB", (128, 64)), path


def test_manifest_records_parameters(dataset):
    manifest = json.loads((dataset / "synthetic.json").read_text())
    assert manifest["version"] == synthetic.GENERATOR_VERSION
    assert {k: manifest[k] for k in ("seed", "train_frames", "clip_frames", "height", "width")} == dict(
        seed=0, train_frames=96, clip_frames=48, height=64, width=128
    )
    assert manifest["counts"]["images"] == 96 + 40 + 2
    assert manifest["counts"]["labels"] == 96 + 40 + 2 * 40


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_with_any_worker_count(dataset, tmp_path):
    again = _generate(tmp_path / "again", workers=2)
    assert _hashes(again) == _hashes(dataset)


def test_different_seed_gives_different_files(dataset, tmp_path):
    other = _hashes(_generate(tmp_path / "other", seed=1))
    mine = _hashes(dataset)
    images = [name for name in mine if "_img" in name]
    assert sum(other[name] != mine[name] for name in images) == len(images)


# --------------------------------------------------------------------------- labels


def test_labels_are_mostly_white(dataset):
    for path in [*(dataset / "val/val_label").iterdir(), *(dataset / "test/test_label/1").iterdir()]:
        white = (_load(path) == 255).all(-1).mean()
        assert 0.9 < white < 0.99, path


def _val_performance(n=40, **settings):
    performer = synthetic.performer_of(0, 0, 1)
    return performer, synthetic.performance_of(0, "val", 0, n, performer, 2.0, **settings)


def test_label_depends_on_pose_only(dataset):
    performer, moves = _val_performance()
    pose = moves[17]
    other = synthetic.performer_of(0, 3, performers=5)
    assert np.array_equal(synthetic.render_label(pose, 64, 128), _load(dataset / "val/val_label/17.png"))
    assert np.array_equal(synthetic.render_frame(pose, performer.look, 64, 128), _load(dataset / "val/val_img/17.png"))
    assert not np.array_equal(synthetic.render_frame(pose, other.look, 64, 128), _load(dataset / "val/val_img/17.png"))


def test_label_limb_colours_come_from_the_fixed_palette():
    palette = np.array(synthetic.LABEL_PALETTE, dtype=float)
    for seed in range(3):
        moves = synthetic.performance_of(seed, "train", 0, 10, synthetic.COURSE_PERFORMER)
        label = synthetic.render_label(moves[0], 128, 256).reshape(-1, 3).astype(float)
        ink = label[(label != 255).any(-1)]
        exact = (ink[:, None, :] == palette[None]).all(-1)
        assert exact.mean(0).all()  # every limb is drawn...
        assert exact.any(1).mean() > 0.4  # ...in its palette colour
        # Anti-aliased edges are blends of a palette colour with white.
        towards = palette - 255.0
        t = np.clip(((ink[:, None, :] - 255.0) * towards).sum(-1) / (towards**2).sum(-1), 0, 1)
        miss = np.linalg.norm(ink[:, None, :] - 255.0 - t[..., None] * towards, axis=-1).min(1)
        assert (miss < 3).mean() > 0.85  # the rest: where two limbs overlap at a joint


# --------------------------------------------------------------------------- motion


def _performance(seed, n=630, **settings):
    return synthetic.performance(np.random.default_rng(seed), n, **settings)


def test_consecutive_frames_are_close_compared_with_distant_ones(dataset):
    frames = [_load(dataset / "val/val_img" / name).astype(float) for name in _frames(40)]
    near = np.mean([np.abs(frames[t + 1] - frames[t]).mean() for t in range(39)])
    far = np.mean([np.abs(frames[t + 15] - frames[t]).mean() for t in range(25)])
    assert near < 0.5 * far


def test_joints_move_smoothly_across_segment_changes():
    for seed in range(3):
        moves = _performance(seed, fps=10)
        joints = np.stack([pose.joints for pose in moves])
        steps = np.linalg.norm(np.diff(joints, axis=0), axis=-1)
        assert steps.max() < 0.3  # image heights per frame at 10 fps (a hand in the fastest turn): no jumps
        assert np.median(steps) < 0.02


def test_a_lower_frame_rate_moves_more_between_frames():
    def median_step(fps):
        joints = np.stack([pose.joints for pose in _performance(4, fps=fps)])
        return np.median(np.linalg.norm(np.diff(joints, axis=0), axis=-1))

    assert median_step(5) > 1.5 * median_step(10) > 2.25 * median_step(20)


def test_a_performance_walks_turns_crouches_and_dances():
    moves = _performance(5)
    kinds = [segment.action or segment.move for segment in moves.schedule]
    assert {"turn_to_travel", "crouch"} <= set(kinds) and len(set(kinds)) >= 5
    assert all(a.start + a.length == b.start for a, b in zip(moves.schedule, moves.schedule[1:]))
    yaw = np.array([pose.yaw for pose in moves])
    assert (np.abs(np.sin(yaw)) > 0.99).mean() > 0.1  # sideways while walking
    pelvis = np.array([pose["pelvis"][1] for pose in moves])
    assert pelvis.max() - np.median(pelvis) > 0.1  # crouching: the pelvis drops by a tenth of the frame or more


def test_the_performer_crosses_the_stage_both_ways_and_stays_in_frame():
    for seed in range(3):
        moves = _performance(seed, aspect=2.0)
        half = synthetic.motion.stage_half_width(2.0)
        assert np.ptp(moves.root_x) > half  # more than half the stage
        walks = [segment for segment in moves.schedule if segment.move == "walk"]
        assert {segment.mirror for segment in walks} == {False, True}  # to the left and to the right
        joints = np.stack([pose.joints for pose in moves])
        assert np.abs(joints[..., 0]).max() < 1.0 and joints[..., 1].min() > 0 and joints[..., 1].max() < 1.0


def test_the_back_turned_to_the_camera_shows_hair_where_the_face_was():
    look = synthetic.COURSE_PERFORMER.look

    def hair_pixels(yaw):
        pose = synthetic.pose_at([yaw if name == "yaw" else value for name, value in zip(synthetic.PARAMS, _neutral())])
        head = synthetic.render_frame(pose, look, 128, 256)[: int(pose["neck"][1] * 128)].astype(float)
        return (np.abs(head - np.array(look.hair) * 255).max(-1) < 40).sum()

    assert hair_pixels(np.pi) > 1.5 * hair_pixels(0.0)


def _neutral():
    return [synthetic.motion._NEUTRAL[name] for name in synthetic.PARAMS]


# --------------------------------------------------------------------------- performers


def _dancer_colour(path: Path) -> np.ndarray:
    pixels = _load(path).reshape(-1, 3)
    return pixels[_saturation(pixels) > 0.3].mean(0)


def test_one_performer_in_every_split_by_default(dataset):
    images = [
        dataset / "train/train_img/0.png",
        dataset / "train/train_img/48.png",
        dataset / "val/val_img/0.png",
        dataset / "test/test_img/0/0.png",
        dataset / "test/test_img/1/0.png",
    ]
    colours = np.array([_dancer_colour(path) for path in images])
    assert np.abs(colours - colours.mean(0)).max() < 20
    assert synthetic.performer_of(0, 0, 1) == synthetic.performer_of(7, 3, 1) == synthetic.COURSE_PERFORMER


def test_several_performers_train_in_turn_and_val_and_test_ones_are_unseen(tmp_path):
    root = _generate(tmp_path / "many", performers=2)
    looks = [synthetic.performer_of(0, k, 2).look for k in range(5)]  # train 0, 1; val 2; test 3, 4
    shirts = np.array([look.shirt for look in looks])
    assert min(np.abs(shirts[i] - shirts[j]).sum() for i in range(5) for j in range(i)) > 0.1
    images = [
        root / "train/train_img/0.png",
        root / "train/train_img/48.png",
        root / "val/val_img/0.png",
        root / "test/test_img/0/0.png",
        root / "test/test_img/1/0.png",
    ]
    colours = [_dancer_colour(path) for path in images]
    assert min(np.abs(colours[i] - colours[j]).sum() for i in range(5) for j in range(i)) > 20
    assert json.loads((root / "synthetic.json").read_text())["performers"] == 2


def test_background_is_grey_away_from_the_dancer(dataset):
    for name in ("train/train_img/0.png", "train/train_img/60.png", "val/val_img/20.png", "test/test_img/1/0.png"):
        image, label = _load(dataset / name), _load(dataset / name.replace("_img", "_label"))
        empty = (label == 255).all(axis=(0, 2))
        # columns with no limb within 16 px are pure studio
        far = np.array([empty[max(x - 16, 0) : x + 17].all() for x in range(len(empty))])
        assert far.sum() > 20
        assert _saturation(image[:, far]).max() < 0.1


# --------------------------------------------------------------------------- baselines


@pytest.mark.slow
def test_baselines_are_in_the_course_range_and_match_the_files(tmp_path):
    """Copying the first frame scores 16-23 dB on val and on every test video, as on the course's data."""
    root = _generate(tmp_path / "full", train_frames=16, clip_frames=16, val_frames=630, test_frames=630, test_sequences=5, workers=2)
    found = json.loads((root / "synthetic.json").read_text())["baselines"]
    assert found["size"] == [32, 64] and len(found["test"]) == 5
    for scores in [found["val"], *found["test"]]:
        assert 16 <= scores["copy_first"] <= 23, scores
        assert scores["copy_first"] + 5 < scores["copy_previous"] < 40, scores
    val = CourseDataset(root, 32, 64, cache_dir=tmp_path / "cache", progress=False).val()
    frames = torch.from_numpy(np.array(val.frames)).float() / 255
    copy_first = average_psnr(psnr_per_frame(frames[:1].expand_as(frames), frames))
    assert float(copy_first) == pytest.approx(found["val"]["copy_first"], abs=0.01)


# --------------------------------------------------------------------------- safety


def test_existing_root_with_same_parameters_is_reused(dataset, capsys):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}
    assert _generate(dataset, progress=True) == dataset
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")} == before


def test_existing_root_with_other_contents_is_refused(dataset, tmp_path):
    with pytest.raises(FileExistsError, match=str(dataset)):
        _generate(dataset, seed=3)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        _generate(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_root(tmp_path):
    root = _generate(tmp_path / "data")
    old = _hashes(root)
    _generate(root, seed=4, overwrite=True)
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 4
    assert _hashes(root)["val/val_img/0.png"] != old["val/val_img/0.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_generation_leaves_no_partial_root(tmp_path, monkeypatch, existing):
    root = tmp_path / "data"
    if existing:
        _generate(root)
    before = _hashes(root) if existing else None
    written = []
    real_write = synthetic.writer._write_png

    def write_then_fail(path, array):
        if len(written) == 5:
            raise RuntimeError("disk on fire")
        written.append(path)
        real_write(path, array)

    monkeypatch.setattr(synthetic.writer, "_write_png", write_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _generate(root, seed=9, overwrite=True)
    assert (_hashes(root) if existing else root.exists()) == (before if existing else False)
    assert [p.name for p in tmp_path.iterdir()] == (["data"] if existing else [])


def _make_outdated(root: Path) -> None:
    manifest = json.loads((root / "synthetic.json").read_text())
    (root / "synthetic.json").write_text(json.dumps({**manifest, "version": synthetic.GENERATOR_VERSION - 1}))


def test_a_set_made_by_another_generator_version_is_refused_or_made_again(tmp_path, capsys):
    root = _generate(tmp_path / "old")
    _make_outdated(root)
    with pytest.raises(
        FileExistsError, match=f"generator version {synthetic.GENERATOR_VERSION - 1} \\(this is version {synthetic.GENERATOR_VERSION}\\)"
    ):
        _generate(root)
    _generate(root, replace_outdated=True, progress=True)
    assert "making it again" in capsys.readouterr().out
    assert json.loads((root / "synthetic.json").read_text())["version"] == synthetic.GENERATOR_VERSION
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(FileExistsError, match="not made by this generator"):
        _generate(foreign, replace_outdated=True)


def test_the_built_in_set_is_made_again_when_outdated(tmp_path, monkeypatch):
    from cvae_dist.config import DataConfig
    from cvae_dist.data import dataset_root

    monkeypatch.chdir(tmp_path)
    config = DataConfig(synthetic_train_frames=16)
    settings = dict(train_frames=16, val_frames=4, test_sequences=1, test_frames=4, height=32, width=64)
    monkeypatch.setattr(synthetic, "generate_dataset", _partial(synthetic.generate_dataset, **settings))
    root = dataset_root(config, progress=False)
    _make_outdated(root)
    assert dataset_root(config, progress=False) == root
    assert json.loads((root / "synthetic.json").read_text())["version"] == synthetic.GENERATOR_VERSION


def _partial(function, **fixed):
    return lambda root, **given: function(root, **{**given, **fixed})


def test_staging_left_by_a_killed_run_is_removed(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f"data.tmp-{int(finished.stdout)}"  # a process that is gone
    (abandoned / "train").mkdir(parents=True)
    ours = tmp_path / f"other.tmp-{os.getpid()}"  # another dataset's staging, of a live process
    ours.mkdir()
    _generate(tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", ours.name]


def test_bad_settings_raise_value_error(tmp_path):
    for bad in (
        dict(train_frames=0),
        dict(clip_frames=-1),
        dict(height=8),
        dict(seed=-1),
        dict(workers=0),
        dict(performers=0),
        dict(fps=0),
        dict(val_frames=1),
    ):
        with pytest.raises(ValueError):
            _generate(tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- CLI


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "cvae_dist.data.synthetic", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_writes_the_layout(tmp_path):
    root = tmp_path / "cli"
    result = _cli(
        "--root",
        root,
        "--train-frames",
        30,
        "--clip-frames",
        20,
        "--height",
        32,
        "--width",
        64,
        "--val-frames",
        10,
        "--test-sequences",
        1,
        "--test-frames",
        12,
        "--workers",
        2,
        "--seed",
        3,
    )
    assert result.returncode == 0, result.stderr
    assert str(root) in result.stdout.strip().splitlines()[-1]
    assert "val: copy first frame" in result.stdout and "test 0: copy first frame" in result.stdout
    assert _names(root / "train/train_img") == _frames(30)
    assert _names(root / "val/val_label") == _frames(10)
    assert _names(root / "test/test_label/0") == _frames(12)
    assert _load(root / "test/test_img/0/0.png").shape == (32, 64, 3)


def test_cli_help():
    result = _cli("--help")
    assert result.returncode == 0
    for flag in (
        "--root",
        "--train-frames",
        "--seed",
        "--height",
        "--width",
        "--clip-frames",
        "--workers",
        "--overwrite",
        "--performers",
        "--fps",
        "train_label",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--train-frames", "0"), "argument --train-frames: must be >= 1, got 0"),
        (("--height", "4"), "argument --height: must be >= 32, got 4"),
        (("--workers", "0"), "argument --workers: must be >= 1, got 0"),
    ],
)
def test_cli_rejects_bad_values_without_traceback(tmp_path, args, message):
    result = _cli("--root", tmp_path / "bad", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_foreign_root(tmp_path):
    (tmp_path / "taken").mkdir()
    result = _cli("--root", tmp_path / "taken", "--train-frames", 8, "--val-frames", 4, "--test-frames", 4, "--height", 32, "--width", 64)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --root {tmp_path / 'taken'} already exists and was not made by this generator; pass --overwrite (overwrite=True) to replace it"
    ]
