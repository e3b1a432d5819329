"""CLI: `python -m sensorium_jax.data.convert SRC_FOLDER... --out STORE`.

Validates every source folder first, then writes each mouse atomically into the zarr v3
store (see `sensorium_jax.data.store` for the layout). Re-running with the same sources is
a no-op. Bad input ends with one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sensorium_jax.data.store import convert, open_store
from sensorium_jax.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sensorium_jax.data.convert",
        description="Convert official SENSORIUM mouse folders into a zarr v3 store.",
    )
    parser.add_argument("sources", nargs="+", type=Path, help="mouse folder(s) in the official format")
    parser.add_argument("--out", required=True, type=Path, help="store folder (created or updated)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    names = convert(args.sources, args.out, progress=not args.quiet)
    store = open_store(args.out)
    print(f"{len(names)} mice converted or up to date in {time.perf_counter() - started:.1f} s; "
          f"{args.out} holds {len(store.mice)}: {', '.join(store.mice)}")


if __name__ == "__main__":
    run_cli(main)
