"""How the performer moves: a skeleton posed from a vector of parameters, and a performance that
strings dance moves, walks across the stage, turns and crouches together.

Coordinates are in image heights: x from the image centre (so a pose fits any width), y down
from the top edge, depth towards the camera. At a yaw of 0 the performer faces the camera;
yaw turns them about the vertical axis through the pelvis (+pi/2: facing the image's right).
"_l" / "_r" are the image's left / right when the performer faces the camera.

* A move maps a phase to a vector of pose parameters (`PARAMS`); an action (walking's turn into
  the direction of travel, turning the back to the camera, a spin, a crouch) overrides some of
  them as a function of the time into its segment. Consecutive segments cross-fade in parameter
  space, so joints never jump. Every segment starts and ends facing the camera, so the yaw is
  continuous without a cross-fade, which would turn the performer back through a whole spin.
* `pose_at` turns one parameter vector into joint positions: arms by forward kinematics, legs by
  two-link IK so that planted feet stay on the floor, then the yaw about the pelvis.
* The stage position comes from the segments too: a walk goes from where the performer stands to
  a target far across the stage; other moves stay put or drift (side steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# "_l" / "_r" are the image's left / right (the performer faces the camera).
JOINTS = (
    "head",
    "neck",
    "pelvis",
    "shoulder_l",
    "elbow_l",
    "wrist_l",
    "hand_l",
    "hip_l",
    "knee_l",
    "ankle_l",
    "toe_l",
    "shoulder_r",
    "elbow_r",
    "wrist_r",
    "hand_r",
    "hip_r",
    "knee_r",
    "ankle_r",
    "toe_r",
)
_JOINT = {name: k for k, name in enumerate(JOINTS)}
SIDES = (("l", -1.0), ("r", 1.0))

# Pose parameters. Angles are radians; lengths are fractions of the stature. arm = abduction in
# the frame plane (0 hanging, pi/2 horizontal, pi straight up), elbow = extra bend in the same
# sense, swing = the whole arm swung forwards out of that plane; foot = how far the foot stands
# out from the hip, stride = how far in front of the hip, lift = foot height above the floor;
# drop = squat depth as a fraction of the leg length; yaw = facing (0: the camera); travel = stage
# drift per frame (image heights) while dancing in place.
PARAMS = (
    "sway",
    "drop",
    "lean",
    "head",
    "arm_l",
    "arm_r",
    "elbow_l",
    "elbow_r",
    "swing_l",
    "swing_r",
    "foot_l",
    "foot_r",
    "stride_l",
    "stride_r",
    "lift_l",
    "lift_r",
    "yaw",
    "travel",
)
_PARAM = {name: k for k, name in enumerate(PARAMS)}
_NEUTRAL = dict(
    sway=0.0,
    drop=0.04,
    lean=0.0,
    head=0.0,
    arm_l=math.radians(15),
    arm_r=math.radians(15),
    elbow_l=math.radians(10),
    elbow_r=math.radians(10),
    swing_l=0.0,
    swing_r=0.0,
    foot_l=0.03,
    foot_r=0.03,
    stride_l=0.0,
    stride_r=0.0,
    lift_l=0.0,
    lift_r=0.0,
    yaw=0.0,
    travel=0.0,
)
_MIRRORED_SIGN = ("sway", "lean", "head", "travel", "yaw")

# Timings in seconds; a performance is sampled at `fps` frames per second.
DEFAULT_FPS = 5.0
MIN_FPS, MAX_FPS = 1, 120
_CROSSFADE_SECONDS = 0.55
_PERIOD_SECONDS = (1.0, 2.0)  # one dance cycle
_WALK_PERIOD_SECONDS = (0.95, 1.2)  # two steps
_WALK_SPEED = (0.36, 0.54)  # peak, image heights per second: about 0.8-1.2 m/s for a 1.75 m performer
_TURN_SECONDS = 0.8
_DRIFT_SPEED = 0.18  # side steps, image heights per second


# --------------------------------------------------------------------------- skeleton


@dataclass(frozen=True)
class Body:
    """A performer's proportions. Lengths are fractions of the stature."""

    stature: float = 0.81
    """Head top to soles, in image heights."""
    floor: float = 0.93
    """y of the soles when standing, in image heights."""
    torso: float = 0.30
    """Neck base to pelvis."""
    neck: float = 0.10
    """Neck base to head centre."""
    shoulder: float = 0.11
    """Half the shoulder width."""
    hip: float = 0.06
    """Half the hip width."""
    upper_arm: float = 0.17
    forearm: float = 0.145
    hand: float = 0.06
    thigh: float = 0.245
    shin: float = 0.245
    ankle: float = 0.04
    """Ankle height above the sole."""


def sample_body(rng: np.random.Generator) -> Body:
    """Slightly different proportions per performer; the stature stays ~80% of the frame."""
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

    ``joints[k]`` is ``(x, y)`` of ``JOINTS[k]`` in image heights, ``depth[k]`` how far towards
    the camera it is (what is drawn in front of what). ``yaw`` is the facing; ``stature`` scales
    limb thickness; ``floor`` is where the shadow falls.
    """

    joints: np.ndarray
    depth: np.ndarray
    yaw: float
    stature: float
    floor: float

    def __getitem__(self, name: str) -> np.ndarray:
        return self.joints[_JOINT[name]]

    def depth_of(self, name: str) -> float:
        return float(self.depth[_JOINT[name]])


def _in_plane(vector, angle: float) -> np.ndarray:
    """(x, y) rotated in the frame plane (a positive angle tips "down" towards +x), at depth 0."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1], 0.0])


def _swung(vector: np.ndarray, angle: float) -> np.ndarray:
    """Swing a limb forwards (towards the performer's front) by ``angle`` about the shoulder axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([vector[0], c * vector[1] - s * vector[2], s * vector[1] + c * vector[2]])


def _leg_ik(hip, target, thigh: float, shin: float, side: float):
    """Knee and ankle reaching for ``target``; the knee bends forwards and a little outwards."""
    delta = target - hip
    unit = delta / np.linalg.norm(delta)
    reach = min(max(float(np.linalg.norm(delta)), abs(thigh - shin) + 1e-6), 0.9999 * (thigh + shin))
    along = (thigh**2 - shin**2 + reach**2) / (2 * reach)
    across = math.sqrt(max(thigh**2 - along**2, 0.0))
    bend = np.array([0.4 * side, 0.0, 1.0])
    bend -= (bend @ unit) * unit
    return hip + along * unit + across * bend / np.linalg.norm(bend), hip + reach * unit


def pose_at(params, body: Body = Body(), root_x: float = 0.0) -> Pose:
    """Joint positions for one vector of `PARAMS` with the feet around ``root_x``."""
    p = dict(zip(PARAMS, np.asarray(params, dtype=float)))
    size = body.stature
    leg = (body.thigh + body.shin) * size
    ankle_y = body.floor - body.ankle * size
    pelvis_x = p["sway"] * size
    hip_x = {side: pelvis_x + s * body.hip * size for side, s in SIDES}
    feet = {
        side: np.array([s * (body.hip + p["foot_" + side]) * size, ankle_y - p["lift_" + side] * size, p["stride_" + side] * size])
        for side, s in SIDES
    }
    # The pelvis sits as high as the lower-reaching foot allows, so a planted foot stays on the
    # floor however wide the stance or long the stride; "drop" squats below that.
    reach = 0.98 * leg
    height = (
        min(
            math.sqrt(max(reach**2 - (feet[side][0] - hip_x[side]) ** 2 - feet[side][2] ** 2, (0.3 * reach) ** 2)) + p["lift_" + side] * size
            for side, _ in SIDES
        )
        - p["drop"] * leg
    )
    pelvis = np.array([pelvis_x, ankle_y - height, 0.0])
    neck = pelvis + _in_plane((0.0, -body.torso * size), p["lean"])
    joints = {"pelvis": pelvis, "neck": neck, "head": neck + _in_plane((0.0, -body.neck * size), p["lean"] + p["head"])}
    for side, s in SIDES:
        shoulder = neck + _in_plane((s * body.shoulder * size, 0.03 * size), p["lean"])
        upper = p["lean"] - s * p["arm_" + side]
        lower = upper - s * p["elbow_" + side]
        swing = p["swing_" + side]
        elbow = shoulder + _swung(_in_plane((0.0, body.upper_arm * size), upper), swing)
        wrist = elbow + _swung(_in_plane((0.0, body.forearm * size), lower), swing)
        hip = np.array([hip_x[side], pelvis[1], 0.0])
        knee, ankle = _leg_ik(hip, feet[side], body.thigh * size, body.shin * size, s)
        joints.update(
            {
                "shoulder_" + side: shoulder,
                "elbow_" + side: elbow,
                "wrist_" + side: wrist,
                "hand_" + side: wrist + _swung(_in_plane((0.0, body.hand * size), lower), swing),
                "hip_" + side: hip,
                "knee_" + side: knee,
                "ankle_" + side: ankle,
                # Feet point forwards and a little out, so they look short from the front.
                "toe_" + side: ankle + size * np.array([s * 0.03, 0.015, 0.06]),
            }
        )
    return _turned(np.stack([joints[name] for name in JOINTS]), p["yaw"], pelvis_x, root_x, body)


def _turned(joints: np.ndarray, yaw: float, pivot_x: float, root_x: float, body: Body) -> Pose:
    """Turn the body by ``yaw`` about the vertical axis through the pelvis, then place it at ``root_x``."""
    c, s = math.cos(yaw), math.sin(yaw)
    across, depth = joints[:, 0] - pivot_x, joints[:, 2]
    x = pivot_x + across * c + depth * s
    return Pose(np.stack([x + root_x, joints[:, 1]], axis=1), depth * c - across * s, yaw, body.stature, body.floor)


# --------------------------------------------------------------------------- moves


def _deg(angle):
    return np.radians(angle)


def _beat(phase):
    """0..1 bounce twice per cycle: dancers dip on every beat."""
    return (1 - np.cos(2 * phase)) / 2


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _arm_wave(ph, amp):
    """Both arms up in a V, waving in turn; the knees pump on every beat."""
    s = np.sin(ph)
    lag = np.sin(ph - 1.2)  # the forearm follows the upper arm: that makes it a wave
    return dict(
        arm_l=_deg(112 + 35 * amp * s),
        arm_r=_deg(112 - 35 * amp * s),
        elbow_l=_deg(25 * amp * (1 + lag)),
        elbow_r=_deg(25 * amp * (1 - lag)),
        drop=0.05 + 0.06 * amp * _beat(ph),
        sway=0.03 * amp * s,
        lean=_deg(5 * amp * s),
        head=_deg(-6 * amp * s),
        foot_l=0.06,
        foot_r=0.06,
    )


def _squat_bounce(ph, amp):
    """Wide stance and deep rhythmic squats, arms pumping out and in."""
    pump = np.sin(ph)
    return dict(
        foot_l=0.16,
        foot_r=0.16,
        drop=0.06 + 0.16 * amp * (1 - np.cos(ph)) / 2,
        arm_l=_deg(65 + 20 * amp * pump),
        arm_r=_deg(65 + 20 * amp * pump),
        elbow_l=_deg(70 - 45 * amp * pump),
        elbow_r=_deg(70 - 45 * amp * pump),
        head=_deg(4 * amp * pump),
    )


def _side_step(ph, amp):
    """Step-touch with swinging arms, drifting across the stage."""
    s, c = np.sin(ph), np.cos(ph)
    return dict(
        foot_l=0.04 + 0.09 * amp * (1 + c) / 2,
        foot_r=0.04 + 0.09 * amp * (1 - c) / 2,
        lift_l=0.05 * amp * np.clip(s, 0, None) ** 2,
        lift_r=0.05 * amp * np.clip(-s, 0, None) ** 2,
        sway=0.03 * amp * c,
        arm_l=_deg(35 + 30 * amp * s),
        arm_r=_deg(35 - 30 * amp * s),
        elbow_l=_deg(50 + 25 * amp * c),
        elbow_r=_deg(50 - 25 * amp * c),
        drop=0.05 + 0.04 * _beat(ph),
        head=_deg(5 * amp * c),
        travel=_DRIFT_SPEED * amp,
    )


def _kick(ph, amp):
    """Alternating side kicks, arms held out for balance."""
    kick_l = np.clip(np.sin(ph), 0, None) ** 2
    kick_r = np.clip(-np.sin(ph), 0, None) ** 2
    return dict(
        foot_l=0.05 + 0.28 * amp * kick_l,
        foot_r=0.05 + 0.28 * amp * kick_r,
        lift_l=0.22 * amp * kick_l,
        lift_r=0.22 * amp * kick_r,
        lean=_deg(10 * amp * (kick_l - kick_r)),  # leaning away from the kick keeps balance
        arm_l=_deg(85 - 20 * kick_l),
        arm_r=_deg(85 - 20 * kick_r),
        elbow_l=_deg(20 + 30 * kick_r),
        elbow_r=_deg(20 + 30 * kick_l),
        drop=0.07,
    )


def _arm_circles(ph, amp):
    """The hands trace big loops in the frame plane, half a cycle apart."""
    return dict(
        arm_l=_deg(100 + 60 * amp * np.sin(ph)),
        arm_r=_deg(100 - 60 * amp * np.sin(ph)),
        elbow_l=_deg(45 * amp * (1 + np.cos(ph))),
        elbow_r=_deg(45 * amp * (1 - np.cos(ph))),
        sway=0.025 * amp * np.sin(ph),
        drop=0.05 + 0.03 * _beat(ph),
        foot_l=0.08,
        foot_r=0.08,
    )


def _sway(ph, amp):
    """Relaxed hip sway, loose swinging arms and a tilting head."""
    s = np.sin(ph)
    return dict(
        sway=0.07 * amp * s,
        lean=_deg(-5 * amp * s),
        head=_deg(8 * amp * np.sin(ph + 0.8)),
        arm_l=_deg(25 - 15 * amp * s),
        arm_r=_deg(25 + 15 * amp * s),
        elbow_l=_deg(60 + 20 * amp * np.cos(ph)),
        elbow_r=_deg(60 - 20 * amp * np.cos(ph)),
        foot_l=0.09,
        foot_r=0.09,
        drop=0.05 + 0.03 * _beat(ph),
    )


def _disco_point(ph, amp):
    """One arm points up to the corner, then down across the body; other hand on the hip."""
    s = np.sin(ph)
    return dict(
        arm_r=_deg(60 + 85 * amp * s),
        elbow_r=_deg(5),
        arm_l=_deg(40),
        elbow_l=_deg(-105),
        sway=0.05 * amp * s,
        lean=_deg(6 * amp * s),
        head=_deg(10 * amp * s),
        foot_l=0.07,
        foot_r=0.07,
        drop=0.05 + 0.04 * _beat(ph),
    )


def _jumping_jacks(ph, amp):
    """Arms and legs open and close together, with a small hop in between."""
    spread = (1 - np.cos(ph)) / 2
    arms = _deg(20 + 135 * amp * spread)
    feet = 0.02 + 0.2 * amp * spread
    return dict(
        arm_l=arms,
        arm_r=arms,
        elbow_l=_deg(10),
        elbow_r=_deg(10),
        foot_l=feet,
        foot_r=feet,
        drop=0.05 - 0.09 * amp * np.sin(ph) ** 2,
    )


def _walk(ph, amp):
    """A walking gait: feet stride forwards in turn, the swinging foot lifted, arms swing against the legs."""
    s, c = np.sin(ph), np.cos(ph)
    return dict(
        stride_l=0.12 * amp * s,
        stride_r=-0.12 * amp * s,
        lift_l=0.05 * amp * np.clip(c, 0, None) ** 2,
        lift_r=0.05 * amp * np.clip(-c, 0, None) ** 2,
        swing_l=-0.5 * amp * s,
        swing_r=0.5 * amp * s,
        arm_l=_deg(6),
        arm_r=_deg(6),
        elbow_l=_deg(12),
        elbow_r=_deg(12),
        foot_l=0.0,
        foot_r=0.0,
        drop=0.04 + 0.02 * _beat(ph),
    )


# Dance moves, done in place facing the camera (or with the back turned, see `_turn_back`).
DANCE_MOVES = {
    "arm_wave": _arm_wave,
    "squat_bounce": _squat_bounce,
    "side_step": _side_step,
    "kick": _kick,
    "arm_circles": _arm_circles,
    "sway": _sway,
    "disco_point": _disco_point,
    "jumping_jacks": _jumping_jacks,
}
MOVES = {**DANCE_MOVES, "walk": _walk}


# --------------------------------------------------------------------------- actions
# An action overrides parameters as a function of t, the seconds into its segment of n seconds
# (clipped to [0, n], so that past its end it holds its final state, facing the camera).


def _turn_to_travel(t, n):
    """Turn into the direction of travel (sideways to the camera), walk, turn back to the camera."""
    turn = min(_TURN_SECONDS, n / 3)
    return dict(yaw=np.pi / 2 * _smoothstep(t / turn) * _smoothstep((n - t) / turn))


def _turn_back(t, n):
    """Turn the back to the camera, keep dancing, and turn on round to face it again."""
    return dict(yaw=np.pi * (_smoothstep(t / _TURN_SECONDS) + _smoothstep((t - n + _TURN_SECONDS) / _TURN_SECONDS)))


def _spin(t, n):
    """One full turn on the spot, arms out."""
    return dict(yaw=2 * np.pi * _smoothstep(t / n), arm_l=_deg(80), arm_r=_deg(80), elbow_l=_deg(10), elbow_r=_deg(10))


def _crouch(t, n):
    """Crouch down low, arms reaching forwards, hold, and stand up again."""
    depth = _smoothstep(t / 0.5) * _smoothstep((n - t) / 0.5)
    return dict(
        drop=0.04 + 0.36 * depth,
        swing_l=1.3 * depth,
        swing_r=1.3 * depth,
        foot_l=0.03 + 0.07 * depth,
        foot_r=0.03 + 0.07 * depth,
        lean=0.0,
        sway=0.0,
    )


ACTIONS = {"turn_to_travel": _turn_to_travel, "turn_back": _turn_back, "spin": _spin, "crouch": _crouch}


# --------------------------------------------------------------------------- performance


@dataclass(frozen=True)
class Segment:
    """One move of a performance, from frame ``start`` for ``length`` frames, optionally with an action."""

    move: str
    start: int
    length: int
    fps: float
    """Frames per second of the performance."""
    period: float
    """Seconds per cycle: each segment has its own tempo."""
    phase: float
    """Phase at ``start`` (radians)."""
    amp: float
    mirror: bool
    """Swap left and right (a walk to the left, a spin the other way)."""
    action: str | None = None
    target_x: float | None = None
    """Where a walk ends (image heights from the centre)."""

    def params(self, frames: np.ndarray) -> np.ndarray:
        """(len(frames), len(PARAMS)) parameters; frames may run past the segment."""
        seconds = (frames - self.start) / self.fps
        values = {**_NEUTRAL, **MOVES[self.move](self.phase + 2 * np.pi * seconds / self.period, self.amp)}
        if self.action is not None:
            values.update(ACTIONS[self.action](np.clip(seconds, 0, self.length / self.fps), self.length / self.fps))
        values["travel"] = values["travel"] / self.fps  # per frame
        table = np.stack([np.broadcast_to(values[name], frames.shape) for name in PARAMS], axis=1)
        return _mirrored(table) if self.mirror else table


def _other_side(name: str) -> str:
    return {"_l": name[:-2] + "_r", "_r": name[:-2] + "_l"}.get(name[-2:], name)


def _mirrored(table: np.ndarray) -> np.ndarray:
    out = table[:, [_PARAM[_other_side(name)] for name in PARAMS]]
    out[:, [_PARAM[name] for name in _MIRRORED_SIGN]] *= -1
    return out


def stage_half_width(aspect: float) -> float:
    """How far from the centre the performer's feet may go, so that outstretched arms stay in frame."""
    return max(aspect / 2 - 0.42, 0.05)


def _walk_segment(rng: np.random.Generator, start: int, x: float, half: float, fps: float) -> Segment:
    """A walk from ``x`` to a point at least 30% of the stage away, either direction."""
    while True:
        target = float(rng.uniform(-half, half))
        if abs(target - x) >= 0.6 * half:  # always possible: one end of the stage is `half` or more away
            break
    speed = rng.uniform(*_WALK_SPEED)
    # The position follows a smoothstep, whose peak speed is 1.5 times the average.
    length = int(math.ceil(max(1.5 * abs(target - x) / speed, 3 * _TURN_SECONDS) * fps))
    return Segment(
        move="walk",
        start=start,
        length=length,
        fps=fps,
        period=float(rng.uniform(*_WALK_PERIOD_SECONDS)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        amp=float(rng.uniform(0.8, 1.0)),
        mirror=target < x,
        action="turn_to_travel",
        target_x=target,
    )


# Segment kinds and how often each comes: (kind, probability, (min, max) length in seconds).
_KINDS = (
    ("walk", 0.35, None),
    ("dance", 0.33, (1.4, 5.3)),
    ("turn_back", 0.1, (1.7, 3.0)),
    ("spin", 0.08, (2.0, 3.0)),
    ("crouch", 0.14, (1.2, 2.3)),
)


def _segment(rng: np.random.Generator, kind: str, start: int, x: float, half: float, previous: str | None, fps: float) -> Segment:
    if kind == "walk":
        return _walk_segment(rng, start, x, half, fps)
    seconds = dict((k, span) for k, _, span in _KINDS)[kind]
    move = str(rng.choice([name for name in DANCE_MOVES if name != previous]))
    return Segment(
        move=move,
        start=start,
        length=max(int(round(rng.uniform(*seconds) * fps)), 1),
        fps=fps,
        period=float(rng.uniform(*_PERIOD_SECONDS)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        amp=float(rng.uniform(0.7, 1.0)),
        mirror=bool(rng.integers(2)),
        action=None if kind == "dance" else kind,
    )


def _plan(rng: np.random.Generator, n_frames: int, half: float, fps: float) -> tuple[tuple[Segment, ...], np.ndarray]:
    """The segments of a performance and the stage position of every frame."""
    segments, root_x = [], np.empty(n_frames)
    start, x, previous = 0, float(rng.uniform(-half, half)), None
    kinds, weights = [k for k, _, _ in _KINDS], np.array([p for _, p, _ in _KINDS])
    while start < n_frames:
        segment = _segment(rng, str(rng.choice(kinds, p=weights / weights.sum())), start, x, half, previous, fps)
        frames = np.arange(start, min(start + segment.length, n_frames))
        if segment.target_x is not None:
            path = x + (segment.target_x - x) * _smoothstep((frames - start + 1) / segment.length)
        else:
            path = np.clip(x + np.cumsum(segment.params(frames)[:, _PARAM["travel"]]), -half, half)
        root_x[frames] = path
        segments.append(segment)
        start, x, previous = start + segment.length, float(path[-1]), segment.move
    return tuple(segments), root_x


def _blend(schedule: Sequence[Segment], n_frames: int, fps: float) -> np.ndarray:
    """Per-frame parameters; each segment fades in over the tail of the previous one (all but the yaw)."""
    table = np.empty((n_frames, len(PARAMS)))
    crossfade = _CROSSFADE_SECONDS * fps
    for k, segment in enumerate(schedule):
        frames = np.arange(segment.start, min(segment.start + segment.length, n_frames))
        values = segment.params(frames)
        if k:
            weight = _smoothstep((frames - segment.start + 1) / (crossfade + 1))[:, None]
            weight = np.where(np.arange(len(PARAMS)) == _PARAM["yaw"], 1.0, weight)
            values = weight * values + (1 - weight) * schedule[k - 1].params(frames)
        table[frames] = values
    return table


@dataclass(frozen=True, eq=False)
class Performance(Sequence):
    """A performance as a sequence of poses: ``performance[t]`` is the `Pose` of frame ``t``."""

    body: Body
    schedule: tuple[Segment, ...]
    params: np.ndarray
    """(frames, len(PARAMS))"""
    root_x: np.ndarray
    """(frames,) stage position, image heights from the centre."""

    def __len__(self) -> int:
        return len(self.root_x)

    def __getitem__(self, t: int) -> Pose:
        return pose_at(self.params[t], self.body, self.root_x[t])


def performance(rng: np.random.Generator, n_frames: int, *, body: Body = Body(), aspect: float = 2.0, fps: float = DEFAULT_FPS) -> Performance:
    """A random performance of ``n_frames`` frames at ``fps`` frames per second on a stage ``aspect`` (width / height) wide."""
    schedule, root_x = _plan(rng, n_frames, stage_half_width(aspect), fps)
    return Performance(body, schedule, _blend(schedule, n_frames, fps), root_x)
