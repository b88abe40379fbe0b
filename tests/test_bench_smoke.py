"""The benchmark harness runs end to end on a tiny data set (benchmarks are not tests:
this only checks that every row is produced and every copy was verified)."""

from __future__ import annotations

import json

import pytest

from replicator.bench.harness import main

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


def test_the_harness_produces_every_row_verified(sandbox, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--source", sandbox.source, "--target", sandbox.target,
                 "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0

    results = json.loads(out.read_text())
    rows = {(row["name"], row["size"]): row for row in results["throughput"]}
    assert set(rows) == {("ceiling", "100B"), ("ceiling", "1KiB"), ("ours", "100B"), ("ours", "1KiB"),
                         ("mirrormaker2", "100B"), ("mirrormaker2", "1KiB"), ("chart settings", "100B")}
    for key, row in rows.items():
        assert row["valid"], f"{key}: {row['verification']}"
        assert row["records_per_second"] and row["records_per_second"] > 0, key
    for name in ("ours", "mirrormaker2", "chart settings"):
        # The copy was read back: counts and content digest per partition.
        assert "content digest match" in rows[(name, "100B")]["verification"], name
        assert rows[(name, "100B")]["records_per_cpu_second"] > 0

    latency = {(row["replicator"], row["rate"]): row for row in results["latency"]}
    assert set(latency) == {("ours", 1000), ("ours", 10000), ("mirrormaker2", 1000), ("mirrormaker2", 10000)}
    for key, row in latency.items():
        assert row["valid"], f"{key}: {row['detail']}"
        assert row["arrived"] == row["sent"] > 0 and row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], key

    table = capsys.readouterr().out
    assert "ours / MirrorMaker 2" in table and "existing chart's settings" in table
