"""Sweep grids: a YAML file of settings to try, expanded into one list of training flags per point.

    python -m cvae_dist.sweep GRID.yaml --count          number of points
    python -m cvae_dist.sweep GRID.yaml --index I        point I's flags, shell-quoted, on one line
    python -m cvae_dist.sweep GRID.yaml --index I --name a folder name for point I
    python -m cvae_dist.sweep GRID.yaml --list           every point: index, name, flags

A grid file has two keys, both holding the same flat setting names as `--config` files:

```yaml
base:                 # settings shared by every point
  num_epoch: 70
grid:                 # every combination of these values (first key varies slowest)
  kl_anneal_type: [Cyclical, Monotonic]
  kl_anneal_cycle: [4, 10]
```

`grid` may also be a list of such mappings: each is expanded on its own and the points are
concatenated, for settings that only make sense together (a scalar counts as a one-value list).
Every point is checked against the training flags when the grid is read, so a typo fails at
submission rather than in the middle of a cluster job.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

from cvae_dist.config import AT_LEAST_0, current_name, number, options, read_yaml, resolve
from cvae_dist.errors import ArgumentParser, UserError, run_command


def load_grid(path: str | Path) -> list[dict[str, Any]]:
    """The points of a grid file, each a mapping of setting (by its current name) -> value, base settings included."""
    data = read_yaml(path, label=f"grid {path}")
    if "grid" not in data or set(data) - {"base", "grid"}:
        raise UserError(f"{path}: expected a mapping with a 'grid' key and an optional 'base' key")
    base = data.get("base") or {}
    blocks = data["grid"] if isinstance(data["grid"], list) else [data["grid"]]
    if not isinstance(base, dict) or not blocks or not all(isinstance(b, dict) and b for b in blocks):
        raise UserError(f"{path}: 'base' must be a mapping and 'grid' a non-empty mapping (or list of mappings) of setting: [values]")
    points = []
    for block in blocks:
        axes = {k: v if isinstance(v, list) else [v] for k, v in block.items()}
        for values in itertools.product(*axes.values()):
            points.append({current_name(k): v for k, v in {**base, **dict(zip(axes, values))}.items()})
    for index, point in enumerate(points):
        resolve({k: (v, f"{path} point {index}") for k, v in point.items()})  # raises a UserError naming the setting
    return points


def resolved(point: dict[str, Any]) -> dict[str, Any]:
    """Every setting of a point, defaults included."""
    return resolve({k: (v, "grid") for k, v in point.items()}).flat()


def varying_keys(points: list[dict[str, Any]]) -> list[str]:
    """Settings the grid sets whose resolved value differs between points, in the order they first appear."""
    keys = dict.fromkeys(k for point in points for k in point)
    settings = [resolved(p) for p in points]
    return [k for k in keys if len({repr(s[k]) for s in settings}) > 1]


def point_flags(point: dict[str, Any]) -> list[str]:
    """Command-line flags of train.py that set a point's values."""
    table = options()
    flags = []
    for name, raw in point.items():
        value = table[name].coerce(raw, "grid")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            flags += [f"--{name}", *map(str, value)]
        else:
            flags += [f"--{name}", str(value)]
    return flags


def point_name(points: list[dict[str, Any]], index: int) -> str:
    """A folder name for a point: its index and the values that set it apart from the others."""
    settings = resolved(points[index])
    parts = [f"{index:03d}"] + [f"{k}-{_name_value(settings[k])}" for k in varying_keys(points)]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "_".join(parts))


def _name_value(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def _point_index(points: list[dict[str, Any]], index: int, path: str) -> int:
    if index >= len(points):  # --index is >= 0 by its type
        raise UserError(f"--index {index}: {path} has {len(points)} points (0 to {len(points) - 1})")
    return index


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m cvae_dist.sweep", description="Expand a sweep grid (YAML) into training flags.")
    parser.add_argument("grid", help="grid file (see slurm/grids/)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--count", action="store_true", help="print the number of points")
    action.add_argument("--index", type=number(int, AT_LEAST_0), metavar="I", help="print point I's flags for cvae_dist/train.py")
    action.add_argument("--list", action="store_true", help="print every point's index, folder name and flags")
    parser.add_argument("--name", action="store_true", help="with --index: print the point's folder name instead of its flags")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    if args.name and args.index is None:
        raise UserError("--name needs --index: it prints one point's folder name")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _print_points)


def _print_points(args: argparse.Namespace) -> None:
    points = load_grid(args.grid)
    if args.count:
        print(len(points))
    elif args.list:
        for index, point in enumerate(points):
            print(f"{index}\t{point_name(points, index)}\t{shlex.join(point_flags(point))}")
    else:
        index = _point_index(points, args.index, args.grid)
        print(point_name(points, index) if args.name else shlex.join(point_flags(points[index])))


if __name__ == "__main__":
    raise SystemExit(main())
