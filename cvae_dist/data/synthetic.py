"""Procedural "dance video" dataset written in the course's folder layout.

Layout under ROOT (file names are unpadded frame numbers starting at 0; an
image and its label always share a name)::

    ROOT/train/train_img/0.png ...    ROOT/train/train_label/0.png ...
    ROOT/val/val_img/0.png ...        ROOT/val/val_label/0.png ...
    ROOT/test/test_img/<i>/0.png      ROOT/test/test_label/<i>/0.png ...
    ROOT/synthetic.json               generator version and parameters

* train: several clips glued into one long video (numbering continues across
  clips); each clip is its own "video" with its own dancer and dance.
* val: one continuous video with its own dancer.
* test: each sequence ``i`` is its own video; only the first image is given,
  together with the labels of all its frames (label 0 is the pose of that
  first image).

A video frame shows a shaded, clothed stick-figure dancer in a softly lit
grey studio; its label shows the same pose as thin limbs in fixed pastel
colours on white.

Design
------
* A video is a `Body` (proportions, floor height), an `Appearance` (clothes,
  skin, hair; the studio is the same for all) and a `Dance`.  Each is drawn from its own child
  of ``SeedSequence([seed, split, video])``, so a file depends only on the
  seed and the parameters - never on the worker count or on other videos.
* A dance is a schedule of moves.  A move maps a phase to a vector of pose
  parameters (`PARAMS`: arm and elbow angles, foot placement, squat depth,
  lean, travel speed); consecutive moves cross-fade in that parameter space,
  so joints never jump.  `pose_at` turns one parameter vector into 2-D joint
  positions: arms by forward kinematics, legs by two-link IK so that planted
  feet stay on the floor.
* A `Pose` holds joint positions only, hence a label (`render_label`) is a
  function of the pose alone; `render_frame` adds the appearance.  Both draw
  anti-aliased (tapered) capsules from a distance field evaluated inside each
  part's bounding box.
* There is deliberately no per-pixel noise: it would put a floor under the
  reconstruction error a model can reach.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cvae_dist.config import AT_LEAST_0, AT_LEAST_1, Range, number
from cvae_dist.errors import ArgumentParser, UserError, output_folder, run_command

GENERATOR_VERSION = 2
DEFAULT_TRAIN_FRAMES = 6400
MIN_SIZE = 32
SPLITS = ("train", "val", "test")
MANIFEST = "synthetic.json"
_CHUNK_FRAMES = 80  # frames per worker job: small enough for a smooth progress bar

# "_l" / "_r" are the image's left / right (the dancer faces the camera).
JOINTS = (
    "head", "neck", "pelvis",
    "shoulder_l", "elbow_l", "wrist_l", "hand_l", "hip_l", "knee_l", "ankle_l", "toe_l",
    "shoulder_r", "elbow_r", "wrist_r", "hand_r", "hip_r", "knee_r", "ankle_r", "toe_r",
)
_JOINT = {name: k for k, name in enumerate(JOINTS)}
_SIDES = (("l", -1.0), ("r", 1.0))

# Pose parameters a move controls.  Angles are radians; lengths are fractions
# of the stature.  arm = abduction (0 hanging, pi/2 horizontal, pi straight
# up), elbow = extra bend in the same sense (negative folds the forearm in),
# foot = how far the foot stands out from the hip, lift = foot height above
# the floor, drop = squat depth as a fraction of the leg length, travel =
# stage drift per frame (image heights).
PARAMS = (
    "sway", "drop", "lean", "head", "arm_l", "arm_r", "elbow_l", "elbow_r",
    "foot_l", "foot_r", "lift_l", "lift_r", "travel",
)
_PARAM = {name: k for k, name in enumerate(PARAMS)}
_NEUTRAL = dict(
    sway=0.0, drop=0.04, lean=0.0, head=0.0, arm_l=math.radians(15), arm_r=math.radians(15),
    elbow_l=math.radians(10), elbow_r=math.radians(10), foot_l=0.03, foot_r=0.03,
    lift_l=0.0, lift_r=0.0, travel=0.0,
)
_MIRRORED_SIGN = ("sway", "lean", "head", "travel")

_CROSSFADE_FRAMES = 16
_SEGMENT_FRAMES = (40, 160)
_PERIOD_FRAMES = (30.0, 60.0)  # one dance cycle: about 1-2 s at 25-30 fps

# (from joint, to joint, colour): one fixed pastel colour per limb, in every video.
LABEL_LIMBS = (
    ("neck", "pelvis", (170, 170, 255)),
    ("shoulder_l", "shoulder_r", (255, 200, 120)),
    ("hip_l", "hip_r", (150, 225, 150)),
    ("neck", "head", (255, 160, 210)),
    ("hip_l", "knee_l", (110, 230, 200)),
    ("knee_l", "ankle_l", (90, 200, 230)),
    ("ankle_l", "toe_l", (150, 190, 110)),
    ("hip_r", "knee_r", (230, 150, 255)),
    ("knee_r", "ankle_r", (190, 120, 220)),
    ("ankle_r", "toe_r", (255, 140, 170)),
    ("shoulder_l", "elbow_l", (255, 230, 100)),
    ("elbow_l", "wrist_l", (200, 240, 110)),
    ("shoulder_r", "elbow_r", (120, 215, 255)),
    ("elbow_r", "wrist_r", (140, 150, 255)),
)
LABEL_HEAD_COLOUR = (255, 130, 130)
LABEL_PALETTE = tuple(colour for *_, colour in LABEL_LIMBS) + (LABEL_HEAD_COLOUR,)
_LABEL_RADIUS = 2.0  # pixels at height 128: a 4 px stroke is still 1 px after 4x downsampling

_LIGHT = np.array([-0.45, -0.55, 0.70]) / np.linalg.norm([-0.45, -0.55, 0.70])


# --------------------------------------------------------------------------- skeleton

@dataclass(frozen=True)
class Body:
    """Per-video proportions.  Lengths are fractions of the stature."""

    stature: float = 0.81  # head top to soles, in image heights
    floor: float = 0.93  # y of the soles when standing, in image heights
    torso: float = 0.30  # neck base to pelvis
    neck: float = 0.10  # neck base to head centre
    shoulder: float = 0.11  # half shoulder width
    hip: float = 0.06  # half hip width
    upper_arm: float = 0.17
    forearm: float = 0.145
    hand: float = 0.06
    thigh: float = 0.245
    shin: float = 0.245
    ankle: float = 0.04  # ankle height above the sole


def sample_body(rng: np.random.Generator) -> Body:
    """Slightly different proportions per video; the stature stays ~80% of the frame."""
    legs = rng.uniform(0.95, 1.05)
    return Body(
        stature=rng.uniform(0.77, 0.85),
        floor=rng.uniform(0.925, 0.95),
        torso=0.79 - 0.49 * legs,  # longer legs, shorter torso: the stature is fixed
        shoulder=0.11 * rng.uniform(0.9, 1.1),
        hip=0.06 * rng.uniform(0.9, 1.15),
        upper_arm=0.17 * rng.uniform(0.95, 1.05),
        forearm=0.145 * rng.uniform(0.95, 1.05),
        thigh=0.245 * legs,
        shin=0.245 * legs,
    )


@dataclass(frozen=True, eq=False)
class Pose:
    """Joint positions of one frame.

    ``joints[k]`` is ``(x, y)`` of ``JOINTS[k]`` in image heights: x from the
    image centre (so a pose fits any width), y down from the top edge.
    ``stature`` scales limb thickness in `render_frame`; ``floor`` is where the
    shadow falls.
    """

    joints: np.ndarray
    stature: float
    floor: float

    def __getitem__(self, name: str) -> np.ndarray:
        return self.joints[_JOINT[name]]


def _rotate(vector, angle: float) -> np.ndarray:
    """Rotate in image coordinates; a positive angle tips "up" towards +x."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def _leg_ik(hip, target, thigh: float, shin: float, side: float):
    """Knee and ankle reaching for ``target``; the knee bends outwards.

    Only part of the bend is visible from the front (the knee mostly comes
    towards the camera), hence the foreshortening factor on the sideways part.
    """
    delta = target - hip
    dist = float(np.hypot(*delta))
    unit = delta / dist
    reach = min(max(dist, abs(thigh - shin) + 1e-6), 0.9999 * (thigh + shin))
    along = (thigh**2 - shin**2 + reach**2) / (2 * reach)
    across = math.sqrt(max(thigh**2 - along**2, 0.0))
    outward = side * np.array([unit[1], -unit[0]])
    return hip + along * unit + 0.4 * across * outward, hip + reach * unit


def pose_at(params, body: Body = Body(), root_x: float = 0.0) -> Pose:
    """Joint positions for one vector of `PARAMS` with the feet around ``root_x``."""
    p = dict(zip(PARAMS, np.asarray(params, dtype=float)))
    size = body.stature
    leg = (body.thigh + body.shin) * size
    ankle_y = body.floor - body.ankle * size
    pelvis_x = root_x + p["sway"] * size
    hip_x = {side: pelvis_x + s * body.hip * size for side, s in _SIDES}
    feet = {
        side: np.array([root_x + s * (body.hip + p["foot_" + side]) * size, ankle_y - p["lift_" + side] * size])
        for side, s in _SIDES
    }
    # The pelvis sits as high as the lower-reaching foot allows, so a planted
    # foot stays on the floor however wide the stance; "drop" squats below that.
    reach = 0.98 * leg
    height = min(
        math.sqrt(max(reach**2 - (feet[side][0] - hip_x[side]) ** 2, (0.3 * reach) ** 2)) + p["lift_" + side] * size
        for side, _ in _SIDES
    ) - p["drop"] * leg
    pelvis = np.array([pelvis_x, ankle_y - height])
    neck = pelvis + _rotate((0.0, -body.torso * size), p["lean"])
    joints = {
        "pelvis": pelvis,
        "neck": neck,
        "head": neck + _rotate((0.0, -body.neck * size), p["lean"] + p["head"]),
    }
    for side, s in _SIDES:
        shoulder = neck + _rotate((s * body.shoulder * size, 0.03 * size), p["lean"])
        upper = p["lean"] - s * p["arm_" + side]
        lower = upper - s * p["elbow_" + side]
        elbow = shoulder + _rotate((0.0, body.upper_arm * size), upper)
        wrist = elbow + _rotate((0.0, body.forearm * size), lower)
        hip = np.array([hip_x[side], pelvis[1]])
        knee, ankle = _leg_ik(hip, feet[side], body.thigh * size, body.shin * size, s)
        joints.update({
            "shoulder_" + side: shoulder,
            "elbow_" + side: elbow,
            "wrist_" + side: wrist,
            "hand_" + side: wrist + _rotate((0.0, body.hand * size), lower),
            "hip_" + side: hip,
            "knee_" + side: knee,
            "ankle_" + side: ankle,
            # Feet point out and towards the camera, so they look short from the front.
            "toe_" + side: ankle + size * np.array([s * 0.06, 0.015]),
        })
    return Pose(np.stack([joints[name] for name in JOINTS]), size, body.floor)


# --------------------------------------------------------------------------- moves

def _deg(angle):
    return np.radians(angle)


def _beat(phase):
    """0..1 bounce twice per cycle: dancers dip on every beat."""
    return (1 - np.cos(2 * phase)) / 2


def _arm_wave(ph, amp):
    """Both arms up in a V, waving in turn; the knees pump on every beat."""
    s = np.sin(ph)
    lag = np.sin(ph - 1.2)  # the forearm follows the upper arm: that makes it a wave
    return dict(
        arm_l=_deg(112 + 35 * amp * s), arm_r=_deg(112 - 35 * amp * s),
        elbow_l=_deg(25 * amp * (1 + lag)), elbow_r=_deg(25 * amp * (1 - lag)),
        drop=0.05 + 0.06 * amp * _beat(ph), sway=0.03 * amp * s,
        lean=_deg(5 * amp * s), head=_deg(-6 * amp * s), foot_l=0.06, foot_r=0.06,
    )


def _squat_bounce(ph, amp):
    """Wide stance and deep rhythmic squats, arms pumping out and in."""
    pump = np.sin(ph)
    return dict(
        foot_l=0.16, foot_r=0.16, drop=0.06 + 0.16 * amp * (1 - np.cos(ph)) / 2,
        arm_l=_deg(65 + 20 * amp * pump), arm_r=_deg(65 + 20 * amp * pump),
        elbow_l=_deg(70 - 45 * amp * pump), elbow_r=_deg(70 - 45 * amp * pump),
        head=_deg(4 * amp * pump),
    )


def _side_step(ph, amp):
    """Step-touch with swinging arms while travelling across the stage."""
    s, c = np.sin(ph), np.cos(ph)
    return dict(
        foot_l=0.04 + 0.09 * amp * (1 + c) / 2, foot_r=0.04 + 0.09 * amp * (1 - c) / 2,
        lift_l=0.05 * amp * np.clip(s, 0, None) ** 2, lift_r=0.05 * amp * np.clip(-s, 0, None) ** 2,
        sway=0.03 * amp * c, arm_l=_deg(35 + 30 * amp * s), arm_r=_deg(35 - 30 * amp * s),
        elbow_l=_deg(50 + 25 * amp * c), elbow_r=_deg(50 - 25 * amp * c),
        drop=0.05 + 0.04 * _beat(ph), head=_deg(5 * amp * c), travel=0.006 * amp,
    )


def _kick(ph, amp):
    """Alternating side kicks, arms held out for balance."""
    kick_l = np.clip(np.sin(ph), 0, None) ** 2
    kick_r = np.clip(-np.sin(ph), 0, None) ** 2
    return dict(
        foot_l=0.05 + 0.28 * amp * kick_l, foot_r=0.05 + 0.28 * amp * kick_r,
        lift_l=0.22 * amp * kick_l, lift_r=0.22 * amp * kick_r,
        lean=_deg(10 * amp * (kick_l - kick_r)),  # leaning away from the kick keeps balance
        arm_l=_deg(85 - 20 * kick_l), arm_r=_deg(85 - 20 * kick_r),
        elbow_l=_deg(20 + 30 * kick_r), elbow_r=_deg(20 + 30 * kick_l), drop=0.07,
    )


def _arm_circles(ph, amp):
    """The hands trace big loops in the frame plane, half a cycle apart."""
    return dict(
        arm_l=_deg(100 + 60 * amp * np.sin(ph)), arm_r=_deg(100 - 60 * amp * np.sin(ph)),
        elbow_l=_deg(45 * amp * (1 + np.cos(ph))), elbow_r=_deg(45 * amp * (1 - np.cos(ph))),
        sway=0.025 * amp * np.sin(ph), drop=0.05 + 0.03 * _beat(ph), foot_l=0.08, foot_r=0.08,
    )


def _sway(ph, amp):
    """Relaxed hip sway, loose swinging arms and a tilting head."""
    s = np.sin(ph)
    return dict(
        sway=0.07 * amp * s, lean=_deg(-5 * amp * s), head=_deg(8 * amp * np.sin(ph + 0.8)),
        arm_l=_deg(25 - 15 * amp * s), arm_r=_deg(25 + 15 * amp * s),
        elbow_l=_deg(60 + 20 * amp * np.cos(ph)), elbow_r=_deg(60 - 20 * amp * np.cos(ph)),
        foot_l=0.09, foot_r=0.09, drop=0.05 + 0.03 * _beat(ph),
    )


def _disco_point(ph, amp):
    """One arm points up to the corner, then down across the body; other hand on the hip."""
    s = np.sin(ph)
    return dict(
        arm_r=_deg(60 + 85 * amp * s), elbow_r=_deg(5), arm_l=_deg(40), elbow_l=_deg(-105),
        sway=0.05 * amp * s, lean=_deg(6 * amp * s), head=_deg(10 * amp * s),
        foot_l=0.07, foot_r=0.07, drop=0.05 + 0.04 * _beat(ph),
    )


def _jumping_jacks(ph, amp):
    """Arms and legs open and close together, with a small hop in between."""
    spread = (1 - np.cos(ph)) / 2
    arms = _deg(20 + 135 * amp * spread)
    feet = 0.02 + 0.2 * amp * spread
    return dict(
        arm_l=arms, arm_r=arms, elbow_l=_deg(10), elbow_r=_deg(10), foot_l=feet, foot_r=feet,
        drop=0.05 - 0.09 * amp * np.sin(ph) ** 2,
    )


MOVES = {
    "arm_wave": _arm_wave,
    "squat_bounce": _squat_bounce,
    "side_step": _side_step,
    "kick": _kick,
    "arm_circles": _arm_circles,
    "sway": _sway,
    "disco_point": _disco_point,
    "jumping_jacks": _jumping_jacks,
}


@dataclass(frozen=True)
class Segment:
    """One move of a dance, from frame ``start`` for ``length`` frames."""

    move: str
    start: int
    length: int
    period: float  # frames per cycle: each segment has its own tempo
    phase: float  # phase at ``start`` (radians)
    amp: float
    mirror: bool  # swap left and right

    def params(self, frames: np.ndarray) -> np.ndarray:
        """(len(frames), len(PARAMS)) move parameters; frames may run past the segment."""
        phase = self.phase + 2 * np.pi * (frames - self.start) / self.period
        values = {**_NEUTRAL, **MOVES[self.move](phase, self.amp)}
        table = np.stack([np.broadcast_to(values[name], phase.shape) for name in PARAMS], axis=1)
        return _mirrored(table) if self.mirror else table


def _other_side(name: str) -> str:
    return {"_l": name[:-2] + "_r", "_r": name[:-2] + "_l"}.get(name[-2:], name)


def _mirrored(table: np.ndarray) -> np.ndarray:
    out = table[:, [_PARAM[_other_side(name)] for name in PARAMS]]
    out[:, [_PARAM[name] for name in _MIRRORED_SIGN]] *= -1
    return out


def _schedule(rng: np.random.Generator, n_frames: int) -> tuple[Segment, ...]:
    segments, start, previous = [], 0, None
    while start < n_frames:
        move = str(rng.choice([name for name in MOVES if name != previous]))
        segment = Segment(
            move=move, start=start, length=int(rng.integers(_SEGMENT_FRAMES[0], _SEGMENT_FRAMES[1] + 1)),
            period=float(rng.uniform(*_PERIOD_FRAMES)), phase=float(rng.uniform(0, 2 * np.pi)),
            amp=float(rng.uniform(0.7, 1.0)), mirror=bool(rng.integers(2)),
        )
        segments.append(segment)
        start, previous = start + segment.length, move
    return tuple(segments)


def _blend(schedule: Sequence[Segment], n_frames: int) -> np.ndarray:
    """Per-frame parameters; each move fades in over the tail of the previous one."""
    table = np.empty((n_frames, len(PARAMS)))
    for k, segment in enumerate(schedule):
        frames = np.arange(segment.start, min(segment.start + segment.length, n_frames))
        values = segment.params(frames)
        if k:
            x = np.clip((frames - segment.start + 1) / (_CROSSFADE_FRAMES + 1), 0, 1)
            weight = (x * x * (3 - 2 * x))[:, None]
            values = weight * values + (1 - weight) * schedule[k - 1].params(frames)
        table[frames] = values
    return table


def _stage_path(rng: np.random.Generator, travel: np.ndarray, aspect: float) -> np.ndarray:
    """Root x per frame: travel plus a slow wander, folded smoothly into the stage."""
    half = max(aspect / 2 - 0.42, 0.05)  # keep outstretched arms inside the frame
    t = np.arange(len(travel))
    wander = sum(
        rng.uniform(0.1, 0.3) * half * np.sin(2 * np.pi * t / rng.uniform(200, 600) + rng.uniform(0, 2 * np.pi))
        for _ in range(2)
    )
    unfolded = rng.uniform(-0.8, 0.8) * half + np.cumsum(travel) + wander
    return half * np.sin(unfolded / half)


@dataclass(frozen=True, eq=False)
class Dance(Sequence):
    """A dance as a sequence of poses: ``dance[t]`` is the `Pose` of frame ``t``."""

    body: Body
    schedule: tuple[Segment, ...]
    params: np.ndarray  # (frames, len(PARAMS))
    root_x: np.ndarray  # (frames,)

    def __len__(self) -> int:
        return len(self.root_x)

    def __getitem__(self, t: int) -> Pose:
        return pose_at(self.params[t], self.body, self.root_x[t])


def dance(rng: np.random.Generator, n_frames: int, *, body: Body = Body(), aspect: float = 2.0) -> Dance:
    """A random dance of ``n_frames`` frames for a frame ``aspect`` (width / height) wide."""
    schedule = _schedule(rng, n_frames)
    params = _blend(schedule, n_frames)
    return Dance(body, schedule, params, _stage_path(rng, params[:, _PARAM["travel"]], aspect))


# --------------------------------------------------------------------------- appearance

@dataclass(frozen=True)
class Studio:
    """Background light; static within a video (the camera is fixed)."""

    wall: float  # grey level of the back wall
    floor: float  # grey level of the floor
    horizon: float  # y where wall meets floor, in image heights
    spot_x: float  # spotlight centre x, image heights from the centre
    tint: tuple[float, float, float]  # faint colour cast of the light


# One studio for every video, as in the course's data (one room, one camera): what changes
# from video to video is the dancer, whose look a model must carry over from earlier frames.
STUDIO = Studio(wall=0.62, floor=0.5, horizon=0.64, spot_x=0.0, tint=(1.0, 1.0, 1.0))


@dataclass(frozen=True)
class Appearance:
    """Everything about a video's look that is not the pose.  Colours are RGB in 0..1."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shirt: tuple[float, float, float]
    bottoms: tuple[float, float, float]  # trousers or skirt
    shoes: tuple[float, float, float]
    long_sleeves: bool
    skirt: bool
    long_hair: bool
    build: float  # limb thickness multiplier
    studio: Studio


_SKIN_RANGE = ((0.98, 0.84, 0.72), (0.42, 0.27, 0.18))
_HAIR = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.10), (0.55, 0.35, 0.18), (0.85, 0.70, 0.40),
         (0.60, 0.20, 0.08), (0.75, 0.75, 0.78))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Vivid, clearly different clothes per video: a model must carry them over from earlier frames."""
    shirt_hue = rng.uniform()
    skin = np.array(_SKIN_RANGE[0]) + rng.uniform() * (np.array(_SKIN_RANGE[1]) - _SKIN_RANGE[0])
    shoes = _hsv(rng.uniform(), rng.uniform(0, 0.8), rng.choice([0.15, 0.95, rng.uniform(0.4, 0.9)]))
    return Appearance(
        skin=tuple(float(c) for c in skin),
        hair=_HAIR[rng.integers(len(_HAIR))],
        shirt=_hsv(shirt_hue, rng.uniform(0.6, 0.95), rng.uniform(0.65, 0.95)),
        # another hue, so that legs contrast with the shirt
        bottoms=_hsv(shirt_hue + rng.uniform(0.25, 0.75), rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.8)),
        shoes=shoes,
        long_sleeves=bool(rng.integers(2)),
        skirt=bool(rng.uniform() < 0.3),
        long_hair=bool(rng.integers(2)),
        build=float(rng.uniform(0.9, 1.15)),
        studio=STUDIO,
    )


# --------------------------------------------------------------------------- rendering

def _to_pixels(point, height: int, width: int) -> np.ndarray:
    return np.array([width / 2 + point[0] * height, point[1] * height])


def _draw_capsule(canvas, a, b, radius_a: float, radius_b: float, colour, shaded: bool) -> None:
    """Composite a capsule (radius tapering from a to b, pixel units) onto ``canvas``."""
    height, width = canvas.shape[:2]
    pad = max(radius_a, radius_b) + 1
    x0, x1 = max(int(min(a[0], b[0]) - pad), 0), min(int(max(a[0], b[0]) + pad) + 1, width)
    y0, y1 = max(int(min(a[1], b[1]) - pad), 0), min(int(max(a[1], b[1]) + pad) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    x = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - a[0]
    y = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - a[1]
    axis = np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)
    length2 = float(axis @ axis)
    t = np.clip((x * axis[0] + y * axis[1]) / length2, 0, 1) if length2 > 0 else np.zeros_like(x * y)
    dx, dy = x - t * axis[0], y - t * axis[1]
    radius = radius_a + t * (radius_b - radius_a)
    distance = np.sqrt(dx * dx + dy * dy)
    alpha = np.clip(radius + 0.5 - distance, 0, 1)[..., None]  # one-pixel anti-aliased edge
    paint = np.asarray(colour, dtype=np.float32)
    if shaded:
        # Treat the capsule as a cylinder/sphere and light it from the upper left.
        nx, ny = dx / radius, dy / radius
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        light = np.clip(nx * _LIGHT[0] + ny * _LIGHT[1] + nz * _LIGHT[2], 0, 1)
        paint = np.minimum(paint * (0.5 + 0.62 * light)[..., None], 1)
    region = canvas[y0:y1, x0:x1]
    region += alpha * (paint - region)


@lru_cache(maxsize=8)
def _studio_background(studio: Studio, height: int, width: int) -> np.ndarray:
    y = (np.arange(height)[:, None] + 0.5) / height
    x = (np.arange(width)[None, :] + 0.5 - width / 2) / height
    wall = studio.wall * (1.1 - 0.25 * y)
    floor = studio.floor * (0.9 + 0.25 * (y - studio.horizon) / (1 - studio.horizon))  # brighter near the camera
    on_floor = 1 / (1 + np.exp(-(y - studio.horizon) / 0.012))
    spot = np.exp(-((x - studio.spot_x) ** 2 / 0.35 + (y - 0.4) ** 2 / 0.45))
    vignette = 1 - 0.22 * ((x / (width / height / 2 + 0.3)) ** 2 + ((y - 0.45) / 0.9) ** 2)
    lum = (wall + on_floor * (floor - wall)) * (0.82 + 0.3 * spot) * vignette
    background = (lum[..., None] * np.asarray(studio.tint)).astype(np.float32)
    background.setflags(write=False)  # shared by every frame of the video
    return background


def _draw_shadow(canvas, pose: Pose) -> None:
    height, width = canvas.shape[:2]
    feet = np.stack([_to_pixels(pose[name], height, width) for name in ("ankle_l", "ankle_r", "toe_l", "toe_r")])
    centre_x = float(feet[:, 0].mean())
    centre_y = pose.floor * height
    half_x = 0.5 * np.ptp(feet[:, 0]) + 0.12 * pose.stature * height
    half_y = 0.03 * pose.stature * height
    x0, x1 = max(int(centre_x - 2.5 * half_x), 0), min(int(centre_x + 2.5 * half_x) + 1, width)
    y0, y1 = max(int(centre_y - 3 * half_y), 0), min(int(centre_y + 3 * half_y) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    x = (np.arange(x0, x1)[None, :] + 0.5 - centre_x) / half_x
    y = (np.arange(y0, y1)[:, None] + 0.5 - centre_y) / half_y
    canvas[y0:y1, x0:x1] *= (1 - 0.35 * np.exp(-(x * x + y * y)))[..., None].astype(np.float32)


def _head_axes(pose: Pose):
    """Head centre and unit vectors along and across the neck, so the head tilts with it."""
    head = pose["head"]
    up = (head - pose["neck"]) / np.linalg.norm(head - pose["neck"])
    return head, up, np.array([-up[1], up[0]])


def _hair_back(pose: Pose, look: Appearance, size: float):
    head, up, _ = _head_axes(pose)
    r = 0.072 * size
    if look.long_hair:  # hangs behind the shoulders, so it is drawn before the torso
        return (head + 0.02 * size * up, head - 0.25 * size * up, r, 1.1 * r, look.hair)
    return (head + 0.02 * size * up, head + 0.02 * size * up, r, r, look.hair)


def _face(pose: Pose, look: Appearance, size: float):
    head, up, across = _head_axes(pose)
    face = head - 0.01 * size * up
    fringe = head + 0.045 * size * up
    return [
        (face, face, 0.066 * size, 0.066 * size, look.skin),
        (fringe - 0.035 * size * across, fringe + 0.035 * size * across, 0.028 * size, 0.028 * size, look.hair),
    ]


def _frame_parts(pose: Pose, look: Appearance):
    """Capsules (a, b, radius_a, radius_b, colour) in image heights, back to front."""
    size = pose.stature
    k = size * look.build
    legs = look.skin if look.skirt else look.bottoms
    sleeves = look.shirt if look.long_sleeves else look.skin
    parts = []
    for side in "lr":
        parts += [
            (pose["hip_" + side], pose["knee_" + side], 0.06 * k, 0.045 * k, legs),
            (pose["knee_" + side], pose["ankle_" + side], 0.045 * k, 0.033 * k, legs),
            (pose["ankle_" + side], pose["toe_" + side], 0.033 * k, 0.028 * k, look.shoes),
        ]
    parts.append((pose["hip_l"], pose["hip_r"], 0.075 * k, 0.075 * k, look.bottoms))
    spine = pose["neck"] - pose["pelvis"]
    chest = pose["neck"] - 0.07 * size * spine / np.linalg.norm(spine)
    waist = pose["pelvis"] + 0.2 * spine
    parts += [
        _hair_back(pose, look, size),
        (pose["neck"], pose["head"], 0.035 * size, 0.03 * size, look.skin),  # under the collar
        (chest, waist, 0.11 * k, 0.095 * k, look.shirt),
        (pose["shoulder_l"], pose["shoulder_r"], 0.05 * k, 0.05 * k, look.shirt),
    ]
    if look.skirt:  # an A-line skirt: one flared panel over each thigh
        for side, s in _SIDES:
            hem = pose["hip_" + side] + 0.55 * (pose["knee_" + side] - pose["hip_" + side])
            parts.append((pose["pelvis"], hem + (0.04 * s * size, 0.0), 0.085 * k, 0.09 * k, look.bottoms))
    parts += _face(pose, look, size)
    for side in "lr":
        parts += [
            (pose["shoulder_" + side], pose["elbow_" + side], 0.045 * k, 0.038 * k, look.shirt),
            (pose["elbow_" + side], pose["wrist_" + side], 0.036 * k, 0.03 * k, sleeves),
            (pose["wrist_" + side], pose["hand_" + side], 0.03 * k, 0.026 * k, look.skin),
        ]
    return parts


def render_frame(pose: Pose, appearance: Appearance, height: int = 128, width: int = 256) -> np.ndarray:
    """The video frame of ``pose``: (height, width, 3) uint8 RGB."""
    canvas = _studio_background(appearance.studio, height, width).copy()
    _draw_shadow(canvas, pose)
    for a, b, radius_a, radius_b, colour in _frame_parts(pose, appearance):
        _draw_capsule(canvas, _to_pixels(a, height, width), _to_pixels(b, height, width),
                      radius_a * height, radius_b * height, colour, shaded=True)
    return _to_uint8(canvas)


def render_label(pose: Pose, height: int = 128, width: int = 256) -> np.ndarray:
    """The label of ``pose``: pastel limbs on white, (height, width, 3) uint8 RGB."""
    canvas = np.ones((height, width, 3), dtype=np.float32)
    radius = _LABEL_RADIUS * height / 128
    for start, end, colour in LABEL_LIMBS:
        _draw_capsule(canvas, _to_pixels(pose[start], height, width), _to_pixels(pose[end], height, width),
                      radius, radius, np.divide(colour, 255), shaded=False)
    head = _to_pixels(pose["head"], height, width)
    _draw_capsule(canvas, head, head, 2.2 * radius, 2.2 * radius, np.divide(LABEL_HEAD_COLOUR, 255), shaded=False)
    return _to_uint8(canvas)


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    return np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- dataset

def make_video(seed: int, split: str, index: int, n_frames: int, aspect: float = 2.0):
    """(appearance, dance) of video ``index`` of ``split``: the same for a given seed."""
    body_rng, look_rng, dance_rng = (
        np.random.default_rng(child)
        for child in np.random.SeedSequence([seed, SPLITS.index(split), index]).spawn(3)
    )
    return sample_appearance(look_rng), dance(dance_rng, n_frames, body=sample_body(body_rng), aspect=aspect)


@dataclass(frozen=True)
class _Video:
    split: str
    index: int  # video number within the split: seeds it
    frames: int
    first_name: int  # file name of frame 0 (train clips continue the numbering)
    images: int  # how many leading frames get an image (test: the first only)
    img_dir: str  # relative to ROOT
    label_dir: str


def _plan(train_frames, clip_frames, val_frames, test_sequences, test_frames) -> list[_Video]:
    clips = []
    for k, start in enumerate(range(0, train_frames, clip_frames)):
        frames = min(clip_frames, train_frames - start)
        clips.append(_Video("train", k, frames, start, frames, "train/train_img", "train/train_label"))
    val = [_Video("val", 0, val_frames, 0, val_frames, "val/val_img", "val/val_label")]
    tests = [
        _Video("test", k, test_frames, 0, 1, f"test/test_img/{k}", f"test/test_label/{k}")
        for k in range(test_sequences)
    ]
    return clips + val + tests


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, compress_level=1)  # speed over size


def _render_chunk(root: str, seed: int, height: int, width: int, video: _Video, start: int, stop: int) -> int:
    """Write frames [start, stop) of ``video``; returns the number of frames done."""
    appearance, moves = make_video(seed, video.split, video.index, video.frames, width / height)
    for t in range(start, stop):
        pose = moves[t]
        name = f"{video.first_name + t}.png"
        _write_png(Path(root, video.label_dir, name), render_label(pose, height, width))
        if t < video.images:
            _write_png(Path(root, video.img_dir, name), render_frame(pose, appearance, height, width))
    return stop - start


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, total: int) -> None:
    with tqdm(total=total, unit="frame", desc="synthetic", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_render_chunk(*job))
            return
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_render_chunk, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def check_settings(*, train_frames, seed, height, width, clip_frames, val_frames,
                   test_sequences, test_frames, workers) -> None:
    """Raise ValueError with a one-line message for unusable settings."""
    counts = dict(train_frames=train_frames, clip_frames=clip_frames, val_frames=val_frames,
                  test_sequences=test_sequences, test_frames=test_frames)
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")


def _manifest(settings: dict, videos: list[_Video]) -> dict:
    return {
        "generator": "cvae_dist.data.synthetic",
        "version": GENERATOR_VERSION,
        **settings,
        "counts": {
            "train_clips": sum(v.split == "train" for v in videos),
            "images": sum(v.images for v in videos),
            "labels": sum(v.frames for v in videos),
        },
    }


def _read_manifest(root: Path):
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def generate_dataset(root, *, train_frames=DEFAULT_TRAIN_FRAMES, seed=0, height=128, width=256,
                     clip_frames=320, val_frames=630, test_sequences=5, test_frames=630,
                     workers=None, overwrite=False, progress=True) -> Path:
    """Write the dataset to ``root`` (see the module docstring) and return its path.

    An existing ``root`` made with the same parameters is reused as is; any
    other existing ``root`` raises FileExistsError unless ``overwrite``.  The
    data are built in a sibling temporary folder and renamed into place, so an
    interrupted run never leaves a half-written ``root``.
    """
    settings = dict(seed=seed, train_frames=train_frames, clip_frames=clip_frames, val_frames=val_frames,
                    test_sequences=test_sequences, test_frames=test_frames, height=height, width=width)
    check_settings(workers=workers, **settings)
    root = Path(os.path.abspath(root))  # "." or "data/" still has a name to derive the staging folder from
    videos = _plan(train_frames, clip_frames, val_frames, test_sequences, test_frames)
    manifest = _manifest(settings, videos)
    if root.exists():
        if _read_manifest(root) == manifest:
            print(f"{root}: synthetic dataset with these parameters already exists, reusing it")
            return root
        if not overwrite:
            raise FileExistsError(
                f"{root} already exists and was not generated with these parameters; "
                "pass overwrite=True (--overwrite) to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if staging.exists():
        _remove(staging)
    try:
        _build(staging, videos, manifest, seed, height, width, workers or os.cpu_count() or 1, progress)
        _move_into_place(staging, root)
    except BaseException:
        if staging.exists():
            _remove(staging)
        raise
    return root


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


def _build(staging: Path, videos, manifest, seed, height, width, workers, progress) -> None:
    for video in videos:
        (staging / video.img_dir).mkdir(parents=True, exist_ok=True)
        (staging / video.label_dir).mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(staging), seed, height, width, video, start, min(start + _CHUNK_FRAMES, video.frames))
        for video in videos
        for start in range(0, video.frames, _CHUNK_FRAMES)
    ]
    _run_jobs(jobs, min(workers, len(jobs)), progress, total=sum(v.frames for v in videos))
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- CLI

_CLI_DESCRIPTION = """\
Generate a synthetic dance-video dataset (video frames + pose labels) in the
course layout; file names are unpadded frame numbers from 0:

  ROOT/train/train_img/N.png  ROOT/train/train_label/N.png   clips of different dancers, glued
  ROOT/val/val_img/N.png      ROOT/val/val_label/N.png       one video
  ROOT/test/test_img/I/0.png  ROOT/test/test_label/I/N.png   first image + all labels per test video
  ROOT/synthetic.json                                        generator version and parameters

The same seed and flags always give byte-identical files. An existing ROOT
made with the same flags is reused; other contents are only replaced with
--overwrite.
"""


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m cvae_dist.data.synthetic", description=_CLI_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    count, size = number(int, AT_LEAST_1), number(int, Range(MIN_SIZE))
    parser.add_argument("--root", required=True, type=output_folder, help="output folder (required)")
    parser.add_argument("--train-frames", type=count, default=DEFAULT_TRAIN_FRAMES,
                        help="frames in the train split (default: %(default)s)")
    parser.add_argument("--seed", type=number(int, AT_LEAST_0), default=0, help="random seed, >= 0 (default: %(default)s)")
    parser.add_argument("--height", type=size, default=128,
                        help=f"image height in pixels, >= {MIN_SIZE} (default: %(default)s)")
    parser.add_argument("--width", type=size, default=256,
                        help=f"image width in pixels, >= {MIN_SIZE} (default: %(default)s)")
    parser.add_argument("--clip-frames", type=count, default=320,
                        help="frames per train clip; each clip has its own dancer (default: %(default)s)")
    parser.add_argument("--val-frames", type=count, default=630, help="frames in the val video (default: %(default)s)")
    parser.add_argument("--test-sequences", type=count, default=5, help="number of test videos (default: %(default)s)")
    parser.add_argument("--test-frames", type=count, default=630,
                        help="labels per test video (default: %(default)s)")
    parser.add_argument("--workers", type=count, default=None,
                        help="worker processes; 1 renders in-process (default: number of CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="replace ROOT if it holds anything else")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _make(args: argparse.Namespace) -> None:
    settings = dict(train_frames=args.train_frames, seed=args.seed, height=args.height, width=args.width,
                    clip_frames=args.clip_frames, val_frames=args.val_frames,
                    test_sequences=args.test_sequences, test_frames=args.test_frames)
    began = time.perf_counter()
    try:
        root = generate_dataset(args.root, workers=args.workers, overwrite=args.overwrite, **settings)
    except FileExistsError as error:
        raise UserError(f"--root {error}") from None
    counts = _read_manifest(root)["counts"]
    print(f"synthetic dataset ready at {root}: {counts['labels']} frames "
          f"({counts['images']} images, {counts['labels']} labels) in {time.perf_counter() - began:.1f} s")


def main(argv=None) -> int:
    return run_command(argv, parse_command_line, _make)


if __name__ == "__main__":
    raise SystemExit(main())
