"""`kafka-replicator demo`, run as a user runs it: a subprocess with its own local Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kafka_support import wait_until
from workbench.sandbox import Sandbox

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "cluster.cli", "demo"]


def demo(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        # Its own session, like a terminal's foreground job: Ctrl-C signals the whole group.
        return subprocess.Popen([*DEMO, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)


def test_demo_proves_that_every_record_arrived_where_it_should(sandbox, tmp_path):
    log = tmp_path / "demo.log"
    run = demo("--duration", "10", "--rate", "200", "--state-dir", str(sandbox.sandbox.state_dir),
               log=log)
    assert run.wait(timeout=240) == 0, log.read_text()
    output = log.read_text()
    assert "Using the running Kafka sandbox" in output
    for direction in ("sourceToTarget", "targetToSource"):
        assert f"{direction}: 2/2 members" in output
    for topic in ("damage", "events-sensor", "warehouse-events"):
        assert f"  {topic}" in output and "OK; per partition" in output
    assert "records arrived exactly where they should" in output
    assert "Ray dashboard: http://127.0.0.1:" in output
    assert "Stopped: replicator, Ray. The sandbox" in output
    assert all(cluster["answering"] for cluster in sandbox.sandbox.status().values())


def test_ctrl_c_stops_the_replicator_ray_and_the_brokers_the_demo_started(tmp_path):
    state_dir = tmp_path / "sandbox"
    log = tmp_path / "demo.log"
    run = demo("--duration", "300", "--state-dir", str(state_dir), log=log)
    try:
        wait_until(lambda: "Producing sample traffic" in log.read_text() or run.poll() is not None,
                   180, interval=1, what="the demo to produce")
        assert run.poll() is None, log.read_text()
        time.sleep(3)
        interrupted = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 130, log.read_text()
        stopped_in = time.monotonic() - interrupted
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            Sandbox(state_dir).down()
    output = log.read_text()
    print(f"\nCtrl-C: everything stopped in {stopped_in:.1f}s")
    assert "Interrupted: stopping everything the demo started" in output
    assert "stopped (stopped)" in output  # members stopped gracefully, before Ray went
    assert "Stopped: replicator, Ray, sandbox." in output
    assert not any(cluster["running"] for cluster in Sandbox(state_dir).status().values())
