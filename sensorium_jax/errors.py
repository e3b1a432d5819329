"""User-facing errors: one clear line naming the file, the field and what was expected."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class InputDataError(ValueError):
    """Bad user input (a data folder, a store, a config value).

    Command-line entry points turn it into one line on stderr and exit code 2, without a
    traceback, because the fix is in the user's data, not in our code.
    """

    def __init__(self, path: str | Path, field: str, expected: str, found: Any = None):
        self.path = str(path)
        self.field = field
        self.expected = expected
        self.found = found
        message = f"{self.path}: {field}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a command-line main; user errors become one stderr line and exit status 2."""
    try:
        return main(*args, **kwargs)
    except InputDataError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
