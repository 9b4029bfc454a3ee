"""Typed configuration: every course flag under its course name and default, plus ours.

A run's settings resolve in this order, later winning: field defaults, the chosen
`preset`'s widths, a YAML file (`--config`), then command-line flags. The YAML file and
the command line use the same flat names, so a sweep point is just a list of flags.

The modules, one job each: `sections` declares the settings (type, default, range, --help text),
`ranges` and `option` say which values a setting may take and convert what is given for it,
`validation` checks a run's settings together, and `cli` reads them from flags and YAML files.
"""

from cvae_dist.config.cli import build_parser, from_flat, load_config_file, number, parse_args, read_yaml, resolve, save_config_file
from cvae_dist.config.option import Option, describe, setting, setting_label
from cvae_dist.config.ranges import AT_LEAST_0, AT_LEAST_1, FRACTION, POSITIVE, SHARE, Range
from cvae_dist.config.sections import (
    MAX_LOGVAR,
    MAX_SEED,
    MIN_FRAME_SIDE,
    PRESETS,
    SECTIONS,
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    TrainConfig,
    current_name,
    hparam_labels,
    is_bookkeeping,
    options,
)
from cvae_dist.config.validation import validate

__all__ = [
    "AT_LEAST_0",
    "AT_LEAST_1",
    "FRACTION",
    "MAX_LOGVAR",
    "MAX_SEED",
    "MIN_FRAME_SIDE",
    "POSITIVE",
    "PRESETS",
    "SECTIONS",
    "SHARE",
    "Config",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "Option",
    "Range",
    "TrainConfig",
    "build_parser",
    "current_name",
    "describe",
    "from_flat",
    "hparam_labels",
    "is_bookkeeping",
    "load_config_file",
    "number",
    "options",
    "parse_args",
    "read_yaml",
    "resolve",
    "save_config_file",
    "setting",
    "setting_label",
    "validate",
]
