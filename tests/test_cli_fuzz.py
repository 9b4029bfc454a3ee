"""Property-based: whatever a user types, every command's checks end in status 0 or 2, never in a
traceback, and a status of 2 comes with exactly one `error:` line that names the culprit.

Each command's `parse_command_line`, the part of `main` before any work, runs in-process through
`errors.run_command` as `main` runs it, on command lines that hypothesis draws: known and unknown
flags, values of every type and sign, NaN and infinities, huge and empty values, paths that are
missing, files, folders or too long, and `--config` YAML files with wrong types. The sweep runs
whole, since reading its grid file is its work. `--debug`, which shows tracebacks on purpose, is
never drawn. Examples are derandomized, so that the suite gives the same verdict on every run.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvae_dist import config, docs_figures, evaluate, generate, interop, report, sweep, tb_summary, train
from cvae_dist.data.synthetic import __main__ as synthetic
from cvae_dist.errors import run_command


def often(usual: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` four times in five, `rare` otherwise."""
    return st.sampled_from([usual] * 4 + [rare]).flatmap(lambda strategy: strategy)


# Text as a shell passes it: no NUL, no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=10)
# Beyond 1e308 an int has no float: the huge ones.
HUGE = 10**400
NUMBER_WORDS = [
    "0",
    "1",
    "2",
    "-1",
    "16",
    "0.5",
    "1.5",
    "-0.0",
    "1e-3",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "1e999",
    "9" * 40,
    str(HUGE),
    str(-HUGE),
    "1_000",
    "0x10",
    "",
    " ",
    "two",
    "none",
    "true",
    "[1, 2]",
]
VALUES = st.one_of(st.sampled_from(NUMBER_WORDS), st.integers(-(2**70), 2**70).map(str), st.floats().map(str), TEXT)
# Flags no command has, spelled like flags.
UNKNOWN_FLAGS = st.one_of(
    st.sampled_from(["--batchsize", "--learning_rate", "--bogus", "-x", "--", "--lr_", "--no-lr"]), TEXT.map(lambda name: f"--{name}")
).filter(lambda flag: flag != "--debug")
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.integers(-(2**70), 2**70), st.sampled_from([HUGE, -HUGE]), st.floats(), st.floats(-2, 2), TEXT
)
YAML_VALUES = often(SCALARS, st.one_of(st.lists(SCALARS, max_size=3), st.dictionaries(TEXT, SCALARS, max_size=2)))
# YAML that does not load: a date that is not one, a bad tag, nesting deeper than Python's stack.
BROKEN_YAML = st.sampled_from(["lr: 2024-13-45", "lr: !!binary xyz", "lr: [0.1", "{lr: 1, lr: 2}", "- lr", "lr: " + "[" * 500 + "]" * 500])
SETTING_NAMES = sorted(config.options())
FLAG_NAMES = [name for name in SETTING_NAMES if name != "debug"]  # --debug shows tracebacks on purpose
EDGES = st.sampled_from([math.nan, math.inf, -math.inf, HUGE, -HUGE, 2**64, 0, -1, 1e-300, "", None, True, [], {}])
# A setting or two, each often at an edge: what reaches the checks of config.validate.
FEW_SETTINGS = st.dictionaries(st.sampled_from(SETTING_NAMES), st.one_of(EDGES, YAML_VALUES), min_size=1, max_size=2)
SETTINGS = st.dictionaries(st.one_of(st.sampled_from(SETTING_NAMES), TEXT, st.integers()), YAML_VALUES, max_size=4)
GRIDS = st.fixed_dictionaries(
    {"grid": st.dictionaries(st.sampled_from(SETTING_NAMES), st.one_of(st.lists(YAML_VALUES, min_size=1, max_size=2), YAML_VALUES), max_size=2)},
    optional={"base": SETTINGS},
)


@dataclass(frozen=True)
class Command:
    """One entry point: what is run, its own flags and the names its error lines may use for its positional arguments."""

    run: Callable[[list[str]], int]
    flags: tuple[str, ...]
    positionals: tuple[str, ...] = ()
    leading: Callable[[st.SearchStrategy[str]], st.SearchStrategy[list[str]]] = lambda places: st.just([])
    """The arguments that usually come first, drawn from the places of the file system (YAML: the example's YAML file)."""


def checks_only(parse: Callable[[list[str]], object]) -> Callable[[list[str]], int]:
    return lambda argv: run_command(argv, parse, lambda parsed: None)


INFERENCE_FLAGS = ("--ckpt", "--DR", "--out", "--z", "--seed", "--device")
COMMANDS = {
    "train": Command(
        checks_only(train.parse_command_line),
        (
            "--config",
            "--help",
            *(f"--{name}" for name in FLAG_NAMES),
            *(f"--no-{name}" for name, o in config.options().items() if o.base_type is bool),
        ),
        leading=lambda places: st.just(["--config", "YAML"]),
    ),
    "evaluate": Command(
        checks_only(evaluate.parse_command_line),
        (*INFERENCE_FLAGS, "--val_vi_len", "--samples"),
        leading=lambda places: st.tuples(places, places).map(lambda p: ["--ckpt", p[0], "--out", p[1]]),
    ),
    "generate": Command(
        checks_only(generate.parse_command_line),
        INFERENCE_FLAGS,
        leading=lambda places: st.tuples(places, places).map(lambda p: ["--ckpt", p[0], "--out", p[1]]),
    ),
    "interop": Command(
        checks_only(interop.parse_command_line),
        ("--help",),
        ("command", "COURSE.ckpt", "OUTDIR", "CKPT"),
        leading=lambda places: st.tuples(st.sampled_from(["import", "export"]), places, places).map(list),
    ),
    "report": Command(
        checks_only(report.parse_command_line),
        ("--out",),
        ("RUN_DIR",),
        leading=lambda places: st.tuples(places, places).map(lambda p: [p[0], "--out", p[1]]),
    ),
    "tb_summary": Command(checks_only(tb_summary.parse_command_line), ("--out",), ("logroot",), leading=lambda places: places.map(lambda p: [p])),
    "sweep": Command(
        sweep.main,
        ("--count", "--index", "--list", "--name"),
        ("grid",),
        leading=lambda places: st.sampled_from([["--count"], ["--list"], ["--index", "0"]]).map(lambda action: ["YAML", *action]),
    ),
    "docs_figures": Command(
        checks_only(docs_figures.parse_command_line),
        ("--out", "--run"),
        ("command",),
        leading=lambda places: st.sampled_from(["schedules", "demo"]).map(lambda name: [name]),
    ),
    "synthetic": Command(
        checks_only(synthetic.parse_command_line),
        (
            "--root",
            "--train-frames",
            "--seed",
            "--height",
            "--width",
            "--clip-frames",
            "--val-frames",
            "--test-sequences",
            "--test-frames",
            "--workers",
            "--overwrite",
        ),
        leading=lambda places: places.map(lambda p: ["--root", p]),
    ),
}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Paths of every kind a user may pass, by name; YAML is the file each example writes its YAML into."""
    root = tmp_path_factory.mktemp("places")
    (root / "folder").mkdir()
    (root / "file").write_bytes(b"\xff\xfe not text, not YAML, not a checkpoint")
    return {
        "missing": str(root / "missing"),
        "folder": str(root / "folder"),
        "file": str(root / "file"),
        "under a file": str(root / "file" / "x"),
        "new": str(root / "new" / "out"),
        "too long": str(root / ("x" * 300)),
        "empty": "",
        "YAML": str(root / "settings.yaml"),
    }


def command_lines(command: Command, places: dict[str, str]) -> st.SearchStrategy[list[str]]:
    """The leading arguments (or none), then flags, mostly with one value each, and a few stray values."""
    place = st.sampled_from(sorted(places.values()))
    value = st.one_of(VALUES, place)
    # Mostly known flags with one value each, so that most command lines get past argparse to the checks.
    flag = often(st.sampled_from(command.flags), UNKNOWN_FLAGS)
    values = st.sampled_from([1, 1, 1, 0, 2]).flatmap(lambda n: st.lists(value, min_size=n, max_size=n))
    piece = often(st.tuples(flag, values).map(lambda fv: [fv[0], *fv[1]]), value.map(lambda v: [v]))
    return st.tuples(often(command.leading(place), st.just([])), st.lists(piece, max_size=4)).map(
        lambda parts: parts[0] + [token for piece in parts[1] for token in piece]
    )


def outcome(command: Command, argv: list[str]) -> tuple[int, str]:
    """The exit status and stderr of a command run in-process; any exception but --help's exit fails the test."""
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            status = command.run(argv)
        except SystemExit as exit:  # --help
            status = exit.code
    return status, stderr.getvalue()


def keys_of(document) -> list[str]:
    """Every key of a YAML document, at any depth."""
    if isinstance(document, dict):
        return [str(key) for key in document] + [key for value in document.values() for key in keys_of(value)]
    return [key for value in document for key in keys_of(value)] if isinstance(document, list) else []


def names_the_culprit(line: str, command: Command, argv: list[str], keys: list[str]) -> bool:
    """Whether an error line names a flag, a positional argument, a YAML key or a path of the command line."""
    given = [token for token in argv if token.startswith("-") and len(token) > 1]
    paths = [token for token in argv if "/" in token]
    names = [*command.flags, *command.positionals, *given, *(key for key in keys if key), *paths]
    return line.startswith("error: unrecognized arguments:") or any(name in line for name in names)


BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", COMMANDS)
@BOUNDED
@given(data=st.data())
def test_any_command_line_ends_in_status_0_or_2_with_one_error_line(name, places, data):
    command = COMMANDS[name]
    document = data.draw(st.one_of(GRIDS if name == "sweep" else SETTINGS, TEXT, BROKEN_YAML), label="YAML file")
    argv = data.draw(command_lines(command, places), label="argv")
    check(command, [places["YAML"] if token == "YAML" else token for token in argv], document, places["YAML"])


def as_flags(document: dict) -> list[str]:
    return [token for name, value in document.items() if name in FLAG_NAMES for token in (f"--{name}", str(value))]


# A few settings at a time, in a --config file, as flags, or as the points of a sweep grid.
SETTINGS_SOURCES = {
    "train --config": ("train", st.one_of(FEW_SETTINGS, BROKEN_YAML), lambda document: ["--config", "YAML"]),
    "train flags": ("train", FEW_SETTINGS, as_flags),
    "sweep grid": ("sweep", st.one_of(GRIDS, BROKEN_YAML), lambda document: ["YAML", "--list"]),
}


@pytest.mark.parametrize("source", SETTINGS_SOURCES)
@BOUNDED
@given(data=st.data())
def test_any_settings_end_in_status_0_or_2_with_one_error_line(source, places, data):
    name, documents, command_line = SETTINGS_SOURCES[source]
    document = data.draw(documents, label="settings")
    check(COMMANDS[name], [places["YAML"] if token == "YAML" else token for token in command_line(document)], document, places["YAML"])


def check(command: Command, argv: list[str], document, yaml_path: str) -> None:
    """Write `document` (YAML text or data) to `yaml_path`, run the command and check how it ends."""
    text = document if isinstance(document, str) else yaml.safe_dump(document, allow_unicode=True)
    Path(yaml_path).write_text(text, encoding="utf-8")

    status, stderr = outcome(command, argv)

    assert status in (0, 2)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if status == 2:
        assert stderr.splitlines() == errors and len(errors) == 1, stderr
        assert names_the_culprit(errors[0], command, argv, keys_of(document)), errors[0]
    else:
        assert errors == []
