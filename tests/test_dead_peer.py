"""A process of a two-process run dies: the survivor ends soon with one clear line, not a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sensorium_jax.errors import PEER_LOST_EXIT

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_survivor_of_a_killed_peer_ends_with_one_line(tiny_store, tmp_path):
    port, workdir = free_port(), tmp_path / "run"
    env = {**os.environ, "SENSORIUM_JAX_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S)}
    ranks, logs = [], []
    for rank in range(2):
        log = open(tmp_path / f"stderr{rank}.txt", "w")
        logs.append(log)
        ranks.append(subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "smoke.py"),
             "--workdir", str(workdir), f"--config.data.store={tiny_store}", "--config.train.steps=100000",
             "--config.train.eval_every=50", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={rank}"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
    try:
        deadline = time.time() + 240
        while not (workdir / "metrics.jsonl").exists():  # both are past start-up and training
            assert time.time() < deadline and ranks[0].poll() is None, (tmp_path / "stderr0.txt").read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(ranks[1].pid, signal.SIGKILL)  # the rank's supervisor and its worker
        killed = time.time()
        code = ranks[0].wait(timeout=HEARTBEAT_S + 90)
        waited = time.time() - killed
    finally:
        for process in ranks:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for log in logs:
            log.close()
    stderr = (tmp_path / "stderr0.txt").read_text()
    assert code == PEER_LOST_EXIT, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: process 0 stopped: another process"), stderr[-3000:]
    assert waited < HEARTBEAT_S + 60


def test_the_abort_reason_survives_a_stack_dump_of_many_small_writes():
    """The runtime writes its reason, then a stack dump a few bytes per write: the supervisor's
    kept tail must still hold the reason (it once kept the last 64 reads only)."""
    import io
    import os
    import threading

    from sensorium_jax import supervisor

    read_end, write_end = os.pipe()
    tail: list[str] = []

    class Sink:
        buffer = io.BytesIO()

        def flush(self) -> None:
            pass

    reader = threading.Thread(target=supervisor._forward, args=(os.fdopen(read_end, "rb", 0), Sink(), tail))
    reader.start()
    os.write(write_end, b"UNAVAILABLE: Task 1 heartbeat timeout\n")
    for frame in range(2000):
        os.write(write_end, b"    @ 0x7f4c61040634 frame %d\n" % frame)
        if frame % 50 == 0:
            time.sleep(0.001)  # let the reader take them as separate reads
    os.close(write_end)
    reader.join(timeout=10)
    assert len(tail) > 64 and "heartbeat" in "".join(tail)
