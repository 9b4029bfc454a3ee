"""Drawing a pose: the video frame (performer in the studio) and the label (pastel limbs on white).

Both draw anti-aliased, tapered capsules from a distance field evaluated inside each part's
bounding box, far parts first. A label is a function of the pose alone; a frame adds the
performer's look and the studio. There is deliberately no per-pixel noise: it would put a
floor under the reconstruction error a model can reach.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cvae_dist.data.synthetic.look import STUDIO, Appearance, Studio
from cvae_dist.data.synthetic.motion import Pose

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

# Small depth offsets (fractions of the stature) that order parts at the same depth the way a
# body is built: legs under the hips, the torso over the neck, arms over the torso.
_LEGS, _HIPS, _NECK, _TORSO, _SKIRT, _ARMS = -0.03, -0.02, -0.015, 0.0, 0.002, 0.02


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
    background = np.minimum(lum[..., None] * np.asarray(studio.tint), 1).astype(np.float32)
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


def _limb(pose: Pose, start: str, end: str, radius_start: float, radius_end: float, colour, order: float):
    """A capsule from joint to joint and its drawing depth (larger: nearer the camera)."""
    depth = (pose.depth_of(start) + pose.depth_of(end)) / 2 + order * pose.stature
    return (pose[start], pose[end], radius_start, radius_end, colour, depth)


def _head_parts(pose: Pose, look: Appearance):
    """Hair and face; the face turns with the yaw and hides behind the hair when the back is turned."""
    size, head = pose.stature, pose["head"]
    up = (head - pose["neck"]) / np.linalg.norm(head - pose["neck"])
    across = np.array([-up[1], up[0]])
    forwards, sideways = np.cos(pose.yaw), np.sin(pose.yaw)  # how much the face looks at the camera, and to which side
    depth = pose.depth_of("head")
    r = 0.072 * size
    crown = head + 0.02 * size * up
    hair = (crown, head - 0.25 * size * up if look.long_hair else crown, r, 1.1 * r if look.long_hair else r, look.hair)
    face = head - 0.01 * size * up + 0.025 * size * sideways * across
    fringe = head + 0.045 * size * up + 0.03 * size * sideways * across
    half_fringe = 0.035 * size * max(abs(forwards), 0.4) * across
    return [
        (*hair, depth - 0.05 * size * forwards),
        (face, face, 0.066 * size, 0.066 * size, look.skin, depth + 0.04 * size * forwards + 0.001),
        (fringe - half_fringe, fringe + half_fringe, 0.028 * size, 0.028 * size, look.hair, depth + 0.05 * size * forwards + 0.002),
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
            _limb(pose, "hip_" + side, "knee_" + side, 0.06 * k, 0.045 * k, legs, _LEGS),
            _limb(pose, "knee_" + side, "ankle_" + side, 0.045 * k, 0.033 * k, legs, _LEGS),
            _limb(pose, "ankle_" + side, "toe_" + side, 0.033 * k, 0.028 * k, look.shoes, _LEGS),
            _limb(pose, "shoulder_" + side, "elbow_" + side, 0.045 * k, 0.038 * k, look.shirt, _ARMS),
            _limb(pose, "elbow_" + side, "wrist_" + side, 0.036 * k, 0.03 * k, sleeves, _ARMS),
            _limb(pose, "wrist_" + side, "hand_" + side, 0.03 * k, 0.026 * k, look.skin, _ARMS),
        ]
    spine = pose["neck"] - pose["pelvis"]
    chest = pose["neck"] - 0.07 * size * spine / np.linalg.norm(spine)
    waist = pose["pelvis"] + 0.2 * spine
    # The torso narrows when seen from the side.
    width = 0.75 + 0.25 * abs(np.cos(pose.yaw))
    parts += [
        _limb(pose, "hip_l", "hip_r", 0.075 * k, 0.075 * k, look.bottoms, _HIPS),
        _limb(pose, "neck", "head", 0.035 * size, 0.03 * size, look.skin, _NECK),
        (chest, waist, 0.11 * k * width, 0.095 * k * width, look.shirt, pose.depth_of("neck") + _TORSO * size),
        _limb(pose, "shoulder_l", "shoulder_r", 0.05 * k, 0.05 * k, look.shirt, _TORSO + 0.001),
    ]
    if look.skirt:  # an A-line skirt: one flared panel over each thigh
        for side in "lr":
            hem = pose["hip_" + side] + 0.55 * (pose["knee_" + side] - pose["hip_" + side])
            flare = 0.04 * size * np.sign(hem[0] - pose["pelvis"][0])
            parts.append((pose["pelvis"], hem + (flare, 0.0), 0.085 * k, 0.09 * k, look.bottoms, _SKIRT * size))
    parts += _head_parts(pose, look)
    parts.sort(key=lambda part: part[-1])
    return [part[:-1] for part in parts]


def render_frame(pose: Pose, look: Appearance, height: int = 128, width: int = 256, studio: Studio = STUDIO) -> np.ndarray:
    """The video frame of ``pose``: (height, width, 3) uint8 RGB."""
    canvas = _studio_background(studio, height, width).copy()
    _draw_shadow(canvas, pose)
    for a, b, radius_a, radius_b, colour in _frame_parts(pose, look):
        _draw_capsule(canvas, _to_pixels(a, height, width), _to_pixels(b, height, width), radius_a * height, radius_b * height, colour, shaded=True)
    return _to_uint8(canvas)


def render_label(pose: Pose, height: int = 128, width: int = 256) -> np.ndarray:
    """The label of ``pose``: pastel limbs on white, far limbs first, (height, width, 3) uint8 RGB."""
    canvas = np.ones((height, width, 3), dtype=np.float32)
    radius = _LABEL_RADIUS * height / 128
    limbs = sorted(LABEL_LIMBS, key=lambda limb: pose.depth_of(limb[0]) + pose.depth_of(limb[1]))
    for start, end, colour in limbs:
        _draw_capsule(
            canvas, _to_pixels(pose[start], height, width), _to_pixels(pose[end], height, width), radius, radius, np.divide(colour, 255), shaded=False
        )
    head = _to_pixels(pose["head"], height, width)
    _draw_capsule(canvas, head, head, 2.2 * radius, 2.2 * radius, np.divide(LABEL_HEAD_COLOUR, 255), shaded=False)
    return _to_uint8(canvas)


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    return np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
