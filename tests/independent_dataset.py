"""A second dataset generator in the course layout, independent of `cvae_dist.data.synthetic`.

It shares no code with the package's generator: other shapes (a jointed puppet of polygons and
thick strokes, drawn with PIL), another backdrop (striped wallpaper over a plank floor), another
motion model (random sinusoids per joint, walks at constant speed with pauses, hops), other label
drawings (OpenPose-like keypoint dots and limb lines) and `frame<N>.png` file names. Like the
course's data it has one performer in every split. The demo's recipe is checked on it
(`benchmarks/independent_data.py`), so that the recipe is known not to be tuned to our own drawings.

    python tests/independent_dataset.py --root DIR [--train-frames N] [--seed S]
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HEIGHT, WIDTH = 96, 192
SUPERSAMPLE = 3  # drawn this much larger, then shrunk: smooth edges from PIL's aliased shapes

# Limb lengths in image heights.
TORSO, NECK, UPPER_ARM, FOREARM, THIGH, SHIN = 0.26, 0.07, 0.15, 0.14, 0.2, 0.2
FLOOR_Y = 0.9
LIMBS = (  # (from, to, label colour, frame colour, width in image heights)
    ("hip", "knee_a", (120, 200, 255), (40, 50, 110), 0.045),
    ("knee_a", "foot_a", (100, 170, 240), (40, 50, 110), 0.04),
    ("hip", "knee_b", (255, 170, 120), (40, 50, 110), 0.045),
    ("knee_b", "foot_b", (240, 150, 100), (40, 50, 110), 0.04),
    ("hip", "neck", (200, 160, 255), None, 0.0),
    ("neck", "elbow_a", (150, 240, 150), (230, 200, 60), 0.035),
    ("elbow_a", "hand_a", (120, 220, 120), (230, 200, 60), 0.03),
    ("neck", "elbow_b", (255, 220, 120), (230, 200, 60), 0.035),
    ("elbow_b", "hand_b", (240, 200, 90), (230, 200, 60), 0.03),
    ("neck", "head", (255, 150, 200), None, 0.0),
)
KEYPOINT = (90, 90, 90)


def _point(origin, angle, length):
    """`length` from `origin` along `angle`, measured from straight down, positive towards +x."""
    return (origin[0] + length * math.sin(angle), origin[1] + length * math.cos(angle))


class Motion:
    """Joint angles as sums of random sinusoids; the stage position walks between random targets."""

    def __init__(self, rng: np.random.Generator, frames: int):
        self.frames = frames
        self.angles = {
            name: self._wiggle(rng, amplitude, frames) + offset
            for name, offset, amplitude in (
                ("torso", 0.0, 0.15),
                ("head", 0.0, 0.25),
                ("arm_a", -0.5, 1.1),
                ("arm_b", 0.5, 1.1),
                ("elbow_a", -0.4, 0.6),
                ("elbow_b", 0.4, 0.6),
                ("bend", 0.15, 0.15),
            )
        }
        self.x, self.moving = self._walks(rng, frames)
        gait = np.cumsum(np.abs(np.gradient(self.x))) / 0.05  # the legs cycle with the distance walked
        self.leg_a = 0.35 * np.sin(gait) * self.moving + self.angles["bend"]
        self.leg_b = -0.35 * np.sin(gait) * self.moving + self.angles["bend"]
        hops = np.zeros(frames)
        for start in rng.integers(0, frames, size=max(1, frames // 150)):
            span = np.arange(start, min(start + 14, frames))
            hops[span] = 0.08 * np.sin(np.pi * (span - start) / 14)
        self.lift = hops

    @staticmethod
    def _wiggle(rng, amplitude, frames):
        t = np.arange(frames)
        return sum(amplitude / 3 * np.sin(2 * np.pi * t / rng.uniform(20, 90) + rng.uniform(0, 2 * np.pi)) for _ in range(3))

    @staticmethod
    def _walks(rng, frames):
        x, moving = np.empty(frames), np.zeros(frames)
        position, t = rng.uniform(-0.6, 0.6), 0
        while t < frames:
            pause = int(rng.integers(20, 80))
            x[t : t + pause] = position
            t += pause
            target = rng.uniform(-0.7, 0.7)
            steps = max(int(abs(target - position) / rng.uniform(0.01, 0.02)), 1)
            span = np.arange(steps)
            x[t : t + steps] = (position + (target - position) * (span + 1) / steps)[: max(frames - t, 0)]
            moving[t : t + steps] = 1.0
            position, t = target, t + steps
        return x, moving

    def joints(self, t: int) -> dict[str, tuple[float, float]]:
        """Joint positions of frame t in image heights, x from the image centre."""
        a = {name: values[t] for name, values in self.angles.items()}
        knee_bend = 0.3 + 0.3 * abs(np.sin(self.leg_a[t]))
        hip0 = (self.x[t], 0.0)
        knee_a = _point(hip0, self.leg_a[t], THIGH)
        knee_b = _point(hip0, self.leg_b[t], THIGH)
        foot_a = _point(knee_a, self.leg_a[t] - knee_bend, SHIN)
        foot_b = _point(knee_b, self.leg_b[t] - knee_bend, SHIN)
        drop = FLOOR_Y - max(foot_a[1], foot_b[1]) - self.lift[t]  # the lower foot stands on the floor
        hip = (hip0[0], drop)
        shift = lambda p: (p[0], p[1] + drop)  # noqa: E731
        neck = _point(hip, math.pi + a["torso"], TORSO)
        elbow_a = _point(neck, a["arm_a"], UPPER_ARM)
        elbow_b = _point(neck, a["arm_b"], UPPER_ARM)
        return {
            "hip": hip,
            "neck": neck,
            "head": _point(neck, math.pi + a["torso"] + a["head"], NECK + 0.06),
            "knee_a": shift(knee_a),
            "knee_b": shift(knee_b),
            "foot_a": shift(foot_a),
            "foot_b": shift(foot_b),
            "elbow_a": elbow_a,
            "elbow_b": elbow_b,
            "hand_a": _point(elbow_a, a["arm_a"] + a["elbow_a"], FOREARM),
            "hand_b": _point(elbow_b, a["arm_b"] + a["elbow_b"], FOREARM),
        }


def _pixels(point, scale):
    return (WIDTH * scale / 2 + point[0] * HEIGHT * scale, point[1] * HEIGHT * scale)


def _backdrop(scale: int) -> Image.Image:
    image = Image.new("RGB", (WIDTH * scale, HEIGHT * scale), (214, 196, 170))
    draw = ImageDraw.Draw(image)
    horizon = int(0.62 * HEIGHT * scale)
    for k in range(0, WIDTH * scale, 12 * scale):  # wallpaper stripes
        draw.rectangle([k, 0, k + 5 * scale, horizon], fill=(200, 180, 156))
    draw.rectangle([0, horizon, WIDTH * scale, HEIGHT * scale], fill=(150, 108, 70))
    for k in range(horizon + 4 * scale, HEIGHT * scale, 7 * scale):  # floor planks
        draw.line([0, k, WIDTH * scale, k], fill=(128, 90, 58), width=scale)
    draw.rectangle([0, horizon - 2 * scale, WIDTH * scale, horizon], fill=(90, 70, 50))
    return image


def render_frame(joints, backdrop: Image.Image) -> np.ndarray:
    scale = SUPERSAMPLE
    image = backdrop.copy()
    draw = ImageDraw.Draw(image)
    p = {name: _pixels(point, scale) for name, point in joints.items()}

    def strokes(limbs):
        for start, end, _, colour, width in limbs:
            w = int(width * HEIGHT * scale)
            draw.line([p[start], p[end]], fill=colour, width=w)
            for joint in (start, end):
                draw.ellipse([p[joint][0] - w / 2, p[joint][1] - w / 2, p[joint][0] + w / 2, p[joint][1] + w / 2], fill=colour)

    strokes(LIMBS[:4])  # legs, behind the torso
    # torso: a trapezoid from shoulders to hips
    half_top, half_bottom = 0.07 * HEIGHT * scale, 0.05 * HEIGHT * scale
    (nx, ny), (hx, hy) = p["neck"], p["hip"]
    draw.polygon([(nx - half_top, ny), (nx + half_top, ny), (hx + half_bottom, hy), (hx - half_bottom, hy)], fill=(40, 130, 90))
    strokes(LIMBS[5:9])  # arms, in front of it
    r = 0.055 * HEIGHT * scale
    hx, hy = p["head"]
    draw.rounded_rectangle([hx - r, hy - r, hx + r, hy + r], radius=r / 2, fill=(235, 140, 60))
    draw.rectangle([hx - r / 2, hy - r / 4, hx + r / 2, hy], fill=(60, 40, 30))  # a visor
    return np.asarray(image.resize((WIDTH, HEIGHT), Image.LANCZOS))


def render_label(joints) -> np.ndarray:
    scale = SUPERSAMPLE
    image = Image.new("RGB", (WIDTH * scale, HEIGHT * scale), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    p = {name: _pixels(point, scale) for name, point in joints.items()}
    for start, end, colour, _, _ in LIMBS:
        draw.line([p[start], p[end]], fill=colour, width=int(1.5 * scale))
    for x, y in p.values():
        draw.ellipse([x - 1.5 * scale, y - 1.5 * scale, x + 1.5 * scale, y + 1.5 * scale], fill=KEYPOINT)
    return np.asarray(image.resize((WIDTH, HEIGHT), Image.LANCZOS))


def _write_video(motion: Motion, image_dir: Path, label_dir: Path, first_name: int, images: int, backdrop) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for t in range(motion.frames):
        joints = motion.joints(t)
        name = f"frame{first_name + t}.png"
        Image.fromarray(render_label(joints)).save(label_dir / name)
        if t < images:
            Image.fromarray(render_frame(joints, backdrop)).save(image_dir / name)


def generate(
    root: Path,
    train_frames: int = 6400,
    seed: int = 0,
    clip_frames: int = 400,
    val_frames: int = 630,
    test_sequences: int = 5,
    test_frames: int = 630,
) -> Path:
    """Write the dataset under ``root`` (which must not exist yet) and return it. It is written
    beside it first and renamed into place, so that an interrupted run leaves no partial ``root``."""
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _write(staging, train_frames, seed, clip_frames, val_frames, test_sequences, test_frames)
    staging.rename(root)
    return root


def _write(root: Path, train_frames: int, seed: int, clip_frames: int, val_frames: int, test_sequences: int, test_frames: int) -> None:
    backdrop = _backdrop(SUPERSAMPLE)
    streams = np.random.SeedSequence(seed).spawn(3)
    clips = streams[0].spawn(math.ceil(train_frames / clip_frames))
    for k, start in enumerate(range(0, train_frames, clip_frames)):
        frames = min(clip_frames, train_frames - start)
        _write_video(Motion(np.random.default_rng(clips[k]), frames), root / "train/train_img", root / "train/train_label", start, frames, backdrop)
    _write_video(Motion(np.random.default_rng(streams[1]), val_frames), root / "val/val_img", root / "val/val_label", 0, val_frames, backdrop)
    for k, stream in enumerate(streams[2].spawn(test_sequences)):
        _write_video(Motion(np.random.default_rng(stream), test_frames), root / f"test/test_img/{k}", root / f"test/test_label/{k}", 0, 1, backdrop)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="output folder (must not exist)")
    parser.add_argument("--train-frames", type=int, default=6400, help="frames in the train split (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    print(generate(args.root, args.train_frames, args.seed))


if __name__ == "__main__":
    main()
