"""The one exception type that means "the user's input is wrong", shown as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A bad flag, config, dataset or checkpoint: the message names it and says what is wrong."""


def run_command(command: Callable[[], int | None], debug: bool = False) -> int:
    """A command-line entry point's exit status: `command`'s own (0 if it returns None), or 2 with a
    single `error: ...` line on stderr when it raises UserError (the traceback instead under --debug)."""
    try:
        status = command()
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if status is None else status
