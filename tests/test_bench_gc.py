"""The bench lines the brokers' GC pauses up with the latency turns: read from a real JVM's
GC log, written with the flags the sandbox brokers run with."""

from __future__ import annotations

import subprocess
import time

from workbench.bench import latency
from workbench.bench.latency import LatencyRun
from workbench.sandbox import KAFKA_JVM_OPTS, java_executable

ALLOCATE = """
public class Allocate {
    public static void main(String[] args) {
        byte[][] kept = new byte[64][];
        for (int i = 0; i < 200_000; i++) kept[i % 64] = new byte[16_384];
        System.gc();
    }
}
"""


def test_gc_pauses_are_every_pause_a_jvm_logged(tmp_path):
    (tmp_path / "Allocate.java").write_text(ALLOCATE)
    log = tmp_path / "gc.log"
    subprocess.run([java_executable(), "-Xmx64m", *KAFKA_JVM_OPTS, f"-Xlog:gc:file={log}:time",
                    str(tmp_path / "Allocate.java")], check=True, timeout=120)
    logged = [line for line in log.read_text().splitlines() if " Pause " in line]

    pauses = latency.gc_pauses([log, tmp_path / "absent.log"])

    assert len(pauses) == len(logged) > 0
    assert pauses == sorted(pauses)
    assert all(ms > 0 for _, ms in pauses)
    assert time.time() - 120 < pauses[-1][0] <= time.time()


def test_pauses_during_counts_only_those_that_ended_inside_a_turn():
    # Two turns of 10 s each: [100, 110] and [200, 210].
    run = LatencyRun(1000, 20.0, turns=2, turn_starts=[100.0, 200.0])
    pauses = [(95.0, 50.0), (105.0, 30.0), (115.0, 80.0), (150.0, 500.0), (205.0, 5.0)]

    assert latency.pauses_during(pauses, run) == {"pauses": 2, "total_ms": 35.0, "max_ms": 30.0}
