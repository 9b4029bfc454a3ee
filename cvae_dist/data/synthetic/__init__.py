"""A procedural dance-video dataset in the course's folder layout.

Layout under ROOT (file names are unpadded frame numbers starting at 0; an image and its label
always share a name)::

    ROOT/train/train_img/0.png ...    ROOT/train/train_label/0.png ...
    ROOT/val/val_img/0.png ...        ROOT/val/val_label/0.png ...
    ROOT/test/test_img/<i>/0.png      ROOT/test/test_label/<i>/0.png ...
    ROOT/synthetic.json               generator version, settings and baselines

As in the course's data, one performer (a light-blue shirt, dark trousers) dances in a light
studio in every split: walking across the stage in both directions, turning, crouching and
dancing in place, so that copying the first frame scores in the course's range (16-23 dB). The
train split is several clips glued into one long video (numbering continues); val is one
video; each test sequence is its own video with only its first image given, together with the
labels of all its frames. `performers=N` makes the harder generalisation benchmark: N outfits
take turns in training and the val and test performers are never seen in training.

A label shows the pose as thin limbs in fixed pastel colours on white; a frame shows the
shaded, clothed performer. Modules: `motion` (skeleton, moves, performances), `look`
(performers, studio), `render` (frames and labels), `writer` (files, manifest, baselines);
`python -m cvae_dist.data.synthetic --help` is the command line.
"""

from cvae_dist.data.synthetic.look import COURSE_PERFORMER, STUDIO, Appearance, Performer, Studio
from cvae_dist.data.synthetic.motion import JOINTS, MOVES, PARAMS, Body, Performance, Pose, performance, pose_at
from cvae_dist.data.synthetic.render import LABEL_PALETTE, render_frame, render_label
from cvae_dist.data.synthetic.writer import (
    BASELINE_SIZE,
    DEFAULT_TRAIN_FRAMES,
    GENERATOR_VERSION,
    MANIFEST,
    MIN_SIZE,
    check_settings,
    generate_dataset,
    performance_of,
    performer_of,
    read_manifest,
)

__all__ = [
    "BASELINE_SIZE",
    "COURSE_PERFORMER",
    "DEFAULT_TRAIN_FRAMES",
    "GENERATOR_VERSION",
    "JOINTS",
    "LABEL_PALETTE",
    "MANIFEST",
    "MIN_SIZE",
    "MOVES",
    "PARAMS",
    "STUDIO",
    "Appearance",
    "Body",
    "Performance",
    "Performer",
    "Pose",
    "Studio",
    "check_settings",
    "generate_dataset",
    "performance",
    "performance_of",
    "performer_of",
    "pose_at",
    "read_manifest",
    "render_frame",
    "render_label",
]
