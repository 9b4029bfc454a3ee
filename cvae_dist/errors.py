"""Bad user input: the one exception type that means it, and how every command reports it as one line."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from cvae_dist.allocator import keep_freed_memory

Parsed = TypeVar("Parsed")
# What str.splitlines() breaks at, escaped so that an error stays one line whatever a path or value holds.
LINE_BREAKS = {ord(char): repr(char)[1:-1] for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class UserError(Exception):
    """A bad flag, config, dataset or checkpoint: the message names it and says what is wrong."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose complaints (unknown flag, missing value, wrong type) are UserErrors, so that they
    end like every other bad input: one `error:` line naming the flag, not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def run_command(argv: list[str] | None, parse: Callable[[list[str]], Parsed], run: Callable[[Parsed], int | None]) -> int:
    """A command-line entry point's exit status: `parse` checks the command line (sys.argv by default)
    and `run` does the work with what it returns. The status is `run`'s own (0 if it returns None),
    or 2 with a single `error: ...` line on stderr when either raises UserError (the traceback
    instead under --debug, typed or, once parsed, set as the parsed settings' `debug`); Ctrl-C ends it
    with status 130 and one line. glibc's allocator keeps freed tensors' memory (allocator.py) first."""
    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    parsed = None
    try:
        parsed = parse(argv)
        status = run(parsed)
    except UserError as err:
        if "--debug" in argv or getattr(parsed, "debug", False) is True:
            raise
        print(f"error: {str(err).translate(LINE_BREAKS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is the user's own wish, not a failure to explain with a traceback; 130 is the shell's 128 + SIGINT.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else status


EXIT_INTERRUPTED = 130


def disk_full(err: BaseException, path: Path, what: str, after: str) -> UserError | None:
    """The one-line error for a write that failed for want of space (None for any other failure).

    Python reports ENOSPC (or a full quota) as OSError and safetensors in its message; torch's
    serializer only says "unexpected pos" or "file write failed", so for it the file system's
    free space decides. `after` says what is left intact (e.g. which checkpoint a resume will use).
    """
    text = str(err)
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        full = True
    elif "No space left on device" in text or "os error 28" in text:
        full = True
    elif isinstance(err, RuntimeError) and ("unexpected pos" in text or "write failed" in text):
        full = _free_bytes(path) < DISK_NEARLY_FULL
    else:
        full = False
    if not full:
        return None
    return UserError(
        f"{path}: the disk is full ({_free_bytes(path) / 2**20:.1f} MiB free there) while writing {what}; the partial write was removed; {after}"
    )


# Below this many free bytes, a failed write of torch's serializer is taken for a full disk.
DISK_NEARLY_FULL = 16 * 2**20


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def output_folder(text: str) -> Path:
    """An argparse type for a folder a command writes into: it may not exist yet, but nothing in
    its way may be a file, and the folder it would be made in must be writable."""
    if not text:
        raise argparse.ArgumentTypeError("a folder name may not be empty")
    path = Path(text)
    try:
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    except OSError as err:  # a name too long, a loop of links
        raise argparse.ArgumentTypeError(f"{text}: {err.strerror}") from None
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not writable")
    return path
