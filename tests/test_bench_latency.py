"""The latency stage's turns: pooled into one row, with the cores the replicator and the
machine used while each turn's load ran."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from workbench.bench import latency
from workbench.bench.latency import LatencyRun


def _turn(samples: list[float], cores: float | None, idle: float | None) -> LatencyRun:
    run = LatencyRun(1000, 10.0, valid=True, replicator_cores=cores, idle_cores=idle,
                     turn_starts=[time.time()])
    run.samples = run.direct_samples = sorted(samples)
    return run


def test_turns_pool_their_arrivals_and_average_their_cores():
    run = latency.combined([_turn([1.0, 2.0], 0.2, 1.0), _turn([3.0, 4.0], 0.4, None)])

    assert run.arrived == 4 and run.max_ms == 4.0 and run.turns == 2 and run.valid
    assert abs(run.replicator_cores - 0.3) < 1e-9
    assert run.idle_cores == 1.0  # a turn that measured nothing does not count as zero


def _ticks_seconds(pid: int) -> float:
    """The process's user + system time as the kernel's tick accounting gives it."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_cpu_window_counts_a_busy_process_and_not_a_sleeping_one():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)  # both past their start-up
        found_busy: dict[str, float] = {}
        found_sleeping: dict[str, float] = {}
        ran_before, started = _ticks_seconds(busy.pid), time.monotonic()
        latency._cpu_during(lambda: [busy.pid], time.time(), 1.0, found_busy)
        ran = (_ticks_seconds(busy.pid) - ran_before) / (time.monotonic() - started)
        latency._cpu_during(lambda: [sleeping.pid], time.time(), 1.0, found_sleeping)
    finally:
        busy.kill()
        sleeping.kill()

    # On a loaded machine the busy process gets what the scheduler gives it, so the window
    # is held to the kernel's own account of it (10 ms ticks) rather than to a whole core.
    assert ran > 0.05 and abs(found_busy["replicator"] - ran) <= 0.02 + 0.25 * ran, (found_busy, ran)
    assert found_sleeping["replicator"] < 0.05, found_sleeping
    assert 0.0 <= found_busy["idle"] <= os.cpu_count() and 0.0 <= found_sleeping["idle"], (found_busy, found_sleeping)
