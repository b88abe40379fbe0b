"""The chaos soak, short: `python -m workbench.chaos --minutes 2` as an operator runs it.

Faults from a seeded schedule of every kind (about eight fit in the two minutes), two at a
time, under steady load, on its own sandbox (it kills brokers) and its own two-node Ray
cluster; then every record is checked on both clusters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.soak]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 840  # seconds: 2 minutes of traffic, start-up, catch-up and the check take 4-6


@pytest.mark.timeout(LIMIT + 60)
def test_a_short_soak_loses_nothing_leaks_no_aborted_record_and_makes_no_loop(tmp_path):
    report_file = tmp_path / "chaos.json"
    with open(tmp_path / "chaos.log", "w") as out:
        soak = subprocess.Popen(
            [sys.executable, "-m", "workbench.chaos", "--minutes", "2", "--seed", "11",
             "--rate", "400", "--gap", "3", "--warm-up", "10", "--settle", "15", "--overlap", "2",
             "--json", str(report_file), "--state-dir", str(tmp_path / "state")],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            code = soak.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            soak.send_signal(signal.SIGTERM)  # the soak stops everything it started
            soak.wait(timeout=60)
            pytest.fail(f"the soak did not end within {LIMIT}s:\n"
                        + (tmp_path / "chaos.log").read_text()[-4000:])
    output = (tmp_path / "chaos.log").read_text()
    print(output)
    assert report_file.exists(), output[-4000:]
    report = json.loads(report_file.read_text())
    totals = report["totals"]
    assert report["faults"], output[-4000:]
    assert report["caught_up"], output[-4000:]
    assert totals["checked"] > 10_000
    assert totals["lost"] == 0, output[-4000:]
    assert totals["loops"] == 0, output[-4000:]
    assert totals["aborted_leaked"] == 0, output[-4000:]
    assert totals["out_of_order"] == 0 and totals["foreign"] == 0, output[-4000:]
    assert report["manual_steps"] == 0, output[-4000:]
    assert all(f["recovery_seconds"] is not None for f in report["faults"]), output[-4000:]
    assert code == 0, output[-4000:]
