"""The benchmark harness runs end to end on a tiny data set (benchmarks are not tests:
this only checks that every row is produced and every copy was verified)."""

from __future__ import annotations

import json

import pytest

from workbench.bench.data import ONE_PER_BATCH
from workbench.bench.harness import main

# Warm, it takes about 235 s; on a cold machine MM2's and the perf tools' jars are fetched first.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


def test_the_harness_produces_every_row_verified(sandbox, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--source", sandbox.source, "--target", sandbox.target,
                 "--state-dir", str(sandbox.sandbox.state_dir), "--out", str(out),
                 "--work-dir", str(tmp_path / "work")]) == 0

    results = json.loads(out.read_text())
    assert len(results["source"]["commit"]) == 40  # the commit whose code ran
    rows = {(row["name"], row["size"]): row for row in results["throughput"]}
    # MM2's rows copy the first data set only in a tiny run.
    mirror_makers = ("mirrormaker2", "mirrormaker2-tuned", "mirrormaker2-eos")
    ours = ("ours-batch", "ours-record", "ours-exactly-once", "ours-ray")
    assert set(rows) == {("ceiling", "100B"), ("chart settings", "100B"), *((name, "100B") for name in mirror_makers),
                         *((name, size) for name in ours for size in ("100B", ONE_PER_BATCH))}
    for key, row in rows.items():
        assert row["valid"], f"{key}: {row['verification']}"
        assert row["records_per_second"] and row["records_per_second"] > 0, key
    for name in (*ours, *mirror_makers, "chart settings"):
        # The copy was read back: counts and content digest per partition.
        assert "content digest match" in rows[(name, "100B")]["verification"], name
        assert rows[(name, "100B")]["records_per_cpu_second"] > 0
    for name in ours:
        assert "content digest match" in rows[(name, ONE_PER_BATCH)]["verification"], name
    # The Ray row counts Ray's own processes beside the members: more memory than bare members.
    ray, bare = (rows[(name, "100B")]["details"]["copy"]["peak_rss_bytes"] for name in ("ours-ray", "ours-batch"))
    assert ray > bare > 0, (ray, bare)
    assert results["datasets"][ONE_PER_BATCH]["one_per_batch"]
    # One record per batch is merged as bytes, at less CPU than a decode and an encode.
    small = results["cpu_per_record_one_per_batch"]["us_per_record"]
    assert 0 < small["merge"] < small["re-encode"], small

    latency = {(row["replicator"], row["rate"]): row for row in results["latency"]}
    # The Ray row and MM2's exactly-once row measure throughput only.
    replicators = ("ours-batch", "ours-record", "ours-exactly-once", "mirrormaker2", "mirrormaker2-tuned")
    assert set(latency) == {(name, rate) for name in replicators for rate in (1000, 10000)}
    for key, row in latency.items():
        assert row["valid"], f"{key}: {row['detail']}"
        assert row["arrived"] == row["sent"] > 0, key
        assert row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"], key
        assert row["turns"] == 2 and len(row["detail"].split("; turn ")) == 2, key
        # The bench's brokers log GC: the pauses during this row's turns were looked up.
        assert set(row["broker_gc"]) == {"pauses", "total_ms", "max_ms"}, key
        # What the replicator's processes and the machine used while the loads ran.
        assert row["replicator_cores"] > 0 and row["idle_cores"] >= 0, key
        if key[0].startswith("ours"):  # our members' own latency metric, read over the same turns
            assert row["own_metric"]["writes"] > 0 and row["own_metric"]["p99_ms"] > 0, key

    table = capsys.readouterr().out
    for ratio in ("ours, batch mode / MirrorMaker 2 tuned", "ours, record mode / MirrorMaker 2 tuned",
                  "ours, batch mode, exactly once / MirrorMaker 2 tuned",
                  "ours, batch mode, exactly once / MirrorMaker 2 tuned, exactly once"):
        assert ratio in table
    # The tuning reached MM2's clients: they logged its values beside the shipped defaults.
    tuned = rows[("mirrormaker2-tuned", "100B")]["details"]["client_settings"]
    shipped = rows[("mirrormaker2", "100B")]["details"]["client_settings"]
    assert "262144" in tuned["batch.size"] and "262144" not in shipped["batch.size"], (tuned, shipped)
    assert "65536" in tuned["fetch.min.bytes"], tuned
    eos = rows[("mirrormaker2-eos", "100B")]["details"]
    assert "262144" in eos["client_settings"]["batch.size"], eos["client_settings"]
    # Exactly once reached the copying tasks: transactional producers and read_committed
    # consumers, where the tuned row's tasks have neither.
    for row, transactional in ((eos, True), (rows[("mirrormaker2-tuned", "100B")]["details"], False)):
        clients = row["task_clients"]
        producers = [c for name, c in clients.items() if name.startswith("connector-producer-")]
        consumers = [c for name, c in clients.items() if name.endswith("|replication-consumer")]
        assert len(producers) == len(consumers) == 2, clients
        assert all((p["transactional.id"] != "null") == transactional for p in producers), clients
        assert all(p["enable.idempotence"] == "true" for p in producers if transactional), clients
        assert all((c["isolation.level"] == "read_committed") == transactional for c in consumers), clients
    assert eos["committed_reads"] >= 1
    assert "existing chart's settings" in table and "| target |" in table


def test_the_failover_row_counts_what_a_moved_group_loses_and_reads_twice(sandbox, tmp_path, capsys):
    out = tmp_path / "failover.json"
    assert main(["--tiny", "--only", "failover", "--source", sandbox.source, "--target", sandbox.target,
                 "--state-dir", str(sandbox.sandbox.state_dir), "--out", str(out),
                 "--work-dir", str(tmp_path / "work")]) == 0

    runs = {run["replicator"]: run for run in json.loads(out.read_text())["failover"]}
    assert set(runs) == {"ours-batch", "ours-record", "ours-exactly-once", "mirrormaker2"}
    for name in ("ours-batch", "ours-record", "ours-exactly-once"):
        run = runs[name]
        assert run["expected"] > 0 and run["read"] == run["expected"], run
        assert (run["lost"], run["read_twice"], run["foreign"]) == (0, 0, 0), run["detail"]
    assert runs["mirrormaker2"]["read"] > 0, runs["mirrormaker2"]["detail"]
    assert "| MirrorMaker 2 | 1,200 |" in capsys.readouterr().out
