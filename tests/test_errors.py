"""run_cli: a full disk, however deeply wrapped, is one line and exit status 5."""

from __future__ import annotations

import errno

import pytest

from sensorium_jax.errors import DISK_FULL_EXIT, run_cli


def _save_fails_on_a_full_disk() -> None:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as cause:
        raise ValueError("Failed to write checkpoint item 'state'") from cause


def test_a_full_disk_is_one_line_and_status_5(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(_save_fails_on_a_full_disk)
    assert stop.value.code == DISK_FULL_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no space left on device")


def test_other_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)
