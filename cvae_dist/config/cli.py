"""Settings from outside: the command line (`build_parser`, `parse_args`), YAML files (`read_yaml`,
`load_config_file`, `save_config_file`) and flat mappings of them (`resolve`, `from_flat`), plus
`number`, the argparse type of the other commands' numeric flags."""

from __future__ import annotations

import argparse
import difflib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cvae_dist.config.option import Option, as_scalar
from cvae_dist.config.ranges import Range
from cvae_dist.config.sections import PRESETS, SECTIONS, Config, current_name, options
from cvae_dist.config.validation import validate
from cvae_dist.errors import ArgumentParser, UserError


def build_parser(prog: str = "cvae_dist/train.py") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=(
            "Train the course's conditional VAE for video prediction with Hugging Face Accelerate. "
            "Run with no arguments for the demo (synthetic data, tiny preset, whatever device is there). "
            "Settings resolve as: defaults < --preset widths < --config YAML < flags."
        ),
        argument_default=argparse.SUPPRESS,  # only flags the user typed override the YAML file
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of flag: value settings")
    groups = {name: parser.add_argument_group(f"{name} settings", cls.__doc__) for name, cls in SECTIONS.items()}
    for opt in options().values():
        kwargs: dict[str, Any] = {"help": f"{opt.help} (default: {opt.default})".replace("%", "%%")}
        if opt.base_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(opt.base_type) is list:
            kwargs["nargs"] = "*"
            kwargs["metavar"] = "N"
        else:
            kwargs["metavar"] = "{" + ",".join(opt.choices) + "}" if opt.choices else opt.name.upper()
        groups[opt.section].add_argument(f"--{opt.name}", **kwargs)
        if opt.formerly:  # its own destination, so that messages can name the flag as the user typed it
            groups[opt.section].add_argument(f"--{opt.formerly}", **{**kwargs, "help": f"the former name of --{opt.name}"})
    return parser


def read_yaml(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A YAML file holding a mapping; errors name it as `label` (default: the --config flag)."""
    label = label or f"--config {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except OSError as err:  # a folder, no permission, a name too long
        raise UserError(f"{label}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{label}: not a text file") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: a date such as 2024-13-45
        raise UserError(f"{label}: not valid YAML ({(str(err) or type(err).__name__).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping of flag: value, got {type(data).__name__}")
    return data


def resolve(explicit: dict[str, tuple[Any, str]]) -> Config:
    """Build and validate a Config from explicit settings, each given as name -> (value, where it came from)."""
    table = options()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    given_as: dict[str, str] = {}
    for given, (value, source) in explicit.items():
        name = current_name(given)
        if name not in table:
            raise UserError(f"{source}: unknown setting {str(name)!r}" + _did_you_mean(str(name), table))
        values[name], sources[name] = table[name].coerce(value, source), source
        if name != given:
            given_as[name] = given
    preset = values.get("preset", table["preset"].default)
    merged = {**PRESETS[preset], **values}
    sections = {section: cls(**{k: v for k, v in merged.items() if table[k].section == section}) for section, cls in SECTIONS.items()}
    config = Config(**sections, given_as=given_as)
    validate(config, sources)
    return config


def _did_you_mean(name: str, table: dict[str, Option]) -> str:
    close = difflib.get_close_matches(name, table, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_args(argv: list[str] | None = None, *, default_config: Path | None = None) -> Config:
    """Command line (and optional YAML) -> Config. With no arguments, `default_config` is used."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    if not argv and default_config is not None:
        config_file = default_config
    explicit: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        explicit.update({k: (v, f"--config {config_file}") for k, v in read_yaml(config_file).items()})
    explicit.update({k: (v, f"--{k}") for k, v in args.items()})
    return resolve(explicit)


def from_flat(settings: dict[str, Any], source: str) -> Config:
    """Rebuild a Config from a flat mapping such as a saved config.yaml."""
    return resolve({k: (v, source) for k, v in settings.items()})


def load_config_file(path: str | Path) -> Config:
    return from_flat(read_yaml(path), str(path))


def save_config_file(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.flat(), sort_keys=False))


def number(kind: type, allowed: Range) -> Callable[[str], Any]:
    """An argparse type for the other commands' numeric flags: `kind` held to `allowed`."""

    def convert(text: str) -> Any:
        try:
            value = as_scalar(kind, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind.__name__}, got {text!r}") from None
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    return convert
