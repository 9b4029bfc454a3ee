"""What the performer and the studio look like: everything about a frame that is not the pose."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from cvae_dist.data.synthetic.motion import Body, sample_body

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Studio:
    """Background light; static within a video (the camera is fixed)."""

    wall: float
    """Grey level of the back wall."""
    floor: float
    """Grey level of the floor."""
    horizon: float
    """y where wall meets floor, in image heights."""
    spot_x: float
    """Spotlight centre x, image heights from the centre."""
    tint: RGB
    """Faint colour cast of the light."""


# One light studio for every video, as in the course's data (one room, one camera).
STUDIO = Studio(wall=0.8, floor=0.66, horizon=0.64, spot_x=0.0, tint=(1.0, 0.99, 0.97))


@dataclass(frozen=True)
class Appearance:
    """A performer's clothes, skin and hair. Colours are RGB in 0..1."""

    skin: RGB
    hair: RGB
    shirt: RGB
    bottoms: RGB
    """Trousers or skirt."""
    shoes: RGB
    long_sleeves: bool
    skirt: bool
    long_hair: bool
    build: float
    """Limb thickness multiplier."""


@dataclass(frozen=True)
class Performer:
    """Who dances: proportions and looks."""

    body: Body
    look: Appearance


# The course's performer, as its demo GIFs show them: a light-blue shirt and dark trousers.
COURSE_PERFORMER = Performer(
    body=Body(),
    look=Appearance(
        skin=(0.90, 0.72, 0.58),
        hair=(0.12, 0.08, 0.06),
        shirt=(0.58, 0.76, 0.94),
        bottoms=(0.14, 0.16, 0.24),
        shoes=(0.1, 0.1, 0.1),
        long_sleeves=True,
        skirt=False,
        long_hair=False,
        build=1.0,
    ),
)

_SKIN_RANGE = ((0.98, 0.84, 0.72), (0.42, 0.27, 0.18))
_HAIR = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.10), (0.55, 0.35, 0.18), (0.85, 0.70, 0.40), (0.60, 0.20, 0.08), (0.75, 0.75, 0.78))


def _hsv(h: float, s: float, v: float) -> RGB:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Vivid, clearly different clothes per performer."""
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
    )


def sample_performer(seed: np.random.SeedSequence) -> Performer:
    """A performer of random proportions and looks, the same for the same seed."""
    body_rng, look_rng = (np.random.default_rng(child) for child in seed.spawn(2))
    return Performer(sample_body(body_rng), sample_appearance(look_rng))
