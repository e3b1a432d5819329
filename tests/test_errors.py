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


def test_an_interrupted_training_prints_its_own_line_and_status_130(capsys):
    """Every command (train.py, the fold ensemble) says where the interrupted run's checkpoint went."""
    from sensorium_jax.errors import INTERRUPTED_EXIT
    from sensorium_jax.training.interrupts import TrainingInterrupted

    def interrupted() -> None:
        raise TrainingInterrupted("interrupted at step 7; checkpoint saved in runs/x/checkpoints/latest")

    with pytest.raises(SystemExit) as stop:
        run_cli(interrupted)
    assert stop.value.code == INTERRUPTED_EXIT
    assert capsys.readouterr().err.strip() == "interrupted at step 7; checkpoint saved in runs/x/checkpoints/latest"
    with pytest.raises(SystemExit):
        run_cli(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert capsys.readouterr().err.strip() == "interrupted"
