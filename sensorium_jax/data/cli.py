"""How the data command lines run: absl flags, and one `error: ...` line with exit status 2.

Each CLI module defines its flags in `define_flags()`, called only when it runs as a program,
so importing the library (`from sensorium_jax.data.convert import convert`) registers no
global flags. Its `main(argv)` gets absl's leftovers: the program name, then the positional
arguments (folder paths, relative to the working directory like any path).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from sensorium_jax.errors import InputDataError, run_cli


def _parse(argv: Sequence[str]) -> list[str]:
    """absl's parse with bad flags (unknown, missing, ill-typed) as one line and exit status 2."""
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None


def run(main: Callable[[list[str]], Any]) -> None:
    """`app.run(main)`; an `InputDataError` from main becomes `error: ...` and exit status 2."""

    def checked(argv: list[str]) -> None:
        run_cli(main, argv)  # returns None: app.run exits with main's return value

    app.run(checked, flags_parser=_parse)


def positional(argv: Sequence[str], what: str) -> list[str]:
    """The positional arguments after the program name; at least one is required."""
    rest = list(argv[1:])
    if not rest:
        raise InputDataError("command line", what, f"at least one {what.rstrip('s')}", "none")
    return rest
