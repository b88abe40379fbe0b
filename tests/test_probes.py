"""`replicate --metrics-port`: kafka_replicator_* metrics, /healthz and /readyz on one port,
against the real sandbox brokers; and the readiness and liveness rules themselves."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError

from kafka_support import count, create_topic, flow_for, produce, running, set_group_offsets, wait_until
from replicator.controller import Controller
from replicator.config import parse_config
from replicator.endpoint import Endpoint
from replicator.errors import PortUnavailable
from replicator.export import SERIES
from replicator.health import Health, not_alive, not_ready
from replicator.probes import MemberProbes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def prometheus_names() -> set[str]:
    """The names replicator/export.py's series take in Prometheus' text format."""
    names = set()
    for series in SERIES.values():
        names |= {"counter": {f"{series.name}_total"}, "gauge": {series.name},
                  "histogram": {f"{series.name}_bucket", f"{series.name}_sum",
                                f"{series.name}_count"}}[series.kind]
    return names


def samples(text: str) -> dict[str, float]:
    """kafka_replicator_* samples summed per name (what a scrape holds, its _created aside)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kafka_replicator_") and "_created" not in line.split(" ")[0]:
            series, value = line.rsplit(" ", 1)
            name = series.split("{")[0]
            found[name] = found.get(name, 0.0) + float(value)
    return found


@pytest.mark.kafka
def test_replicate_serves_the_series_ray_exports_without_the_ray_prefix(sandbox, name, tmp_path):
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, b"k", b"v%d" % i, [], None) for i in range(300)])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})))
    log = tmp_path / "replicate.log"
    with open(log, "w") as out:
        replicator = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "replicate", "--config", str(config),
             "--direction", "sourceToTarget", "--member", "sourceToTarget-0", "--metrics-port", "0"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        served = wait_until(lambda: re.search(r"serving .* on (http://127\.0\.0\.1:\d+)", log.read_text()),
                            30, what="the probes' port in the log")
        base = served.group(1)

        def complete():
            status, text = get(f"{base}/metrics")
            found = samples(text)
            done = (found.get("kafka_replicator_records_replicated_total") == 300
                    and found.get("kafka_replicator_consumer_lag") == 0
                    and found.get("kafka_replicator_committed_lag") == 0
                    and found.get("kafka_replicator_lag_seconds") == 0
                    and found.get("kafka_replicator_partitions_ownerless") == 0)
            return found if done else None

        # The backlog is measured every 10 s: the measure after the commits and the assignment.
        found = wait_until(complete, 60, interval=0.5, what="300 records and no lag in /metrics")
        assert set(found) <= prometheus_names(), set(found) - prometheus_names()
        assert found["kafka_replicator_assigned_partitions"] == 2
        assert found["kafka_replicator_commits_total"] > 0
        assert found["kafka_replicator_replication_latency_ms_count"] > 0
        assert found["kafka_replicator_topic_latency_ms_count"] == found["kafka_replicator_replication_latency_ms_count"]
        assert found["kafka_replicator_batches_written_total"] > 0
        _, text = get(f"{base}/metrics")
        assert 'member="sourceToTarget-0"' in text and f'topic="{name}"' in text
        assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"), 20, what="ready")
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/nothing")[0] == 404
    finally:
        replicator.send_signal(signal.SIGTERM)
        assert replicator.wait(timeout=60) == 0, log.read_text()


def probes_for(flow) -> MemberProbes:
    """Probes on a flow that a test runs itself, on any free loopback port."""
    no_controller = types.SimpleNamespace(group_sync=None, backlog=None)
    return MemberProbes(types.SimpleNamespace(flow=flow), no_controller, flow.direction, flow.member, "127.0.0.1", 0)


@pytest.mark.kafka
def test_readyz_fails_while_commits_fail(sandbox, name, monkeypatch):
    create_topic(sandbox.source, name, partitions=1)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": {
                        "groupId": name, "autoCommitIntervalMs": 200, "sessionTimeoutMs": 6000}},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    probes = probes_for(flow)
    readyz = f"http://127.0.0.1:{probes.endpoint.port}/readyz"
    try:
        with running(flow):
            wait_until(lambda: get(readyz)[0] == 200, 30, what="ready")

            def unreachable(consumer, offsets=None, timeout_ms=None):
                raise KafkaConnectionError("the group coordinator is out of reach")

            # The flow's group consumer is the only one in this process that commits.
            monkeypatch.setattr(KafkaConsumer, "commit", unreachable)
            produce(sandbox.source, name, [(0, b"k", b"v", [], None)] * 50)
            status, text = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(get(readyz)),
                                      15, interval=0.5, what="not ready")  # bound: 6 s
            assert "no commit went through for" in text and "(bound 6s)" in text
            assert get(f"http://127.0.0.1:{probes.endpoint.port}/healthz")[0] == 200  # alive all along

            monkeypatch.undo()
            wait_until(lambda: get(readyz)[0] == 200, 15, interval=0.5, what="ready again")
    finally:
        probes.close()


@pytest.mark.kafka
def test_readyz_fails_while_its_group_rebalances(sandbox, name):
    create_topic(sandbox.source, name, partitions=4)
    group = {"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 500}}
    route = {"sourceToTarget": {"topics": [{"sourceTopicName": name}]}}
    first = flow_for(sandbox, consumerGroup=group, replication=route)
    probes = probes_for(first)
    readyz = f"http://127.0.0.1:{probes.endpoint.port}/readyz"
    seen: list[tuple[int, str]] = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            seen.append(get(readyz))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        with running(first):
            wait_until(lambda: get(readyz)[0] == 200, 30, what="the first member ready")
            watcher.start()
            with running(flow_for(sandbox, consumerGroup=group, replication=route)) as second:
                wait_until(lambda: second.health().assigned and len(first.health().assigned) == 2,
                           60, what="the partitions shared")
                wait_until(lambda: seen[-1][0] == 200, 20, what="ready after the rebalance")
            watching.set()
            watcher.join()
    finally:
        probes.close()
    refusals = [text for status, text in seen if status == 503]
    assert refusals and all("rebalancing" in text for text in refusals), refusals
    print(f"\nnot ready for {len(refusals)} of {len(seen)} probes (one every ~20 ms)")


@pytest.mark.kafka
def test_a_replicated_record_shows_in_metrics_of_an_in_process_member(sandbox, name):
    """The scrape exports at that moment: no wait for a periodic export."""
    create_topic(sandbox.source, name, partitions=1)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    probes = probes_for(flow)
    try:
        with running(flow):
            produce(sandbox.source, name, [(0, b"k", b"v", [], None)] * 7)
            wait_until(lambda: count(sandbox.target, name) == 7, 30, what="the copies")
            metrics = f"http://127.0.0.1:{probes.endpoint.port}/metrics"
            wait_until(lambda: samples(get(metrics)[1]).get("kafka_replicator_records_replicated_total") == 7,
                       10, interval=0.2, what="7 records in /metrics")
    finally:
        probes.close()


@pytest.mark.kafka
def test_the_backlog_of_a_partition_nobody_owns_shows_in_records_seconds_and_the_ownerless_gauge(sandbox, name):
    create_topic(sandbox.source, name, partitions=2)
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    produce(sandbox.source, name, [(1, b"k", b"v%d" % i, [], an_hour_ago + i) for i in range(5)])
    set_group_offsets(sandbox.source, name, {TopicPartition(name, 0): 0, TopicPartition(name, 1): 0})
    config = sandbox.config(consumerGroup={"sourceToTarget": name},
                            replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    flow = flow_for(sandbox, **config)  # never run: nobody owns the partitions
    controller = Controller(parse_config(config), "sourceToTarget").start()
    probes = MemberProbes(types.SimpleNamespace(flow=flow), controller, flow.direction, flow.member, "127.0.0.1", 0)
    metrics = f"http://127.0.0.1:{probes.endpoint.port}/metrics"

    def backlog() -> dict[str, float] | None:
        found = {}
        for line in get(metrics)[1].splitlines():
            if line.startswith(("kafka_replicator_committed_lag{", "kafka_replicator_lag_seconds{",
                                "kafka_replicator_partitions_ownerless{")):
                series, value = line.rsplit(" ", 1)
                partition = re.search(r'partition="(\d+)"', series)
                found[series.split("{")[0] + (f"[{partition.group(1)}]" if partition else "")] = float(value)
        return found if len(found) == 5 else None
    try:
        found = wait_until(backlog, 30, interval=0.5, what="the backlog in /metrics")
    finally:
        probes.close()
        controller.close()
    assert found["kafka_replicator_partitions_ownerless"] == 2
    assert (found["kafka_replicator_committed_lag[0]"], found["kafka_replicator_committed_lag[1]"]) == (0, 5)
    assert found["kafka_replicator_lag_seconds[0]"] == 0
    assert 3600 <= found["kafka_replicator_lag_seconds[1]"] < 3660


@pytest.mark.kafka
def test_a_partition_stopped_by_a_rejected_record_shows_in_its_gauge(sandbox, name):
    create_topic(sandbox.source, name, partitions=2)
    create_topic(sandbox.target, name, partitions=2, configs={"max.message.bytes": "4000"})
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    probes = probes_for(flow)
    metrics = f"http://127.0.0.1:{probes.endpoint.port}/metrics"

    def stopped() -> dict[str, float]:
        return {line.split("partition=\"")[1].split("\"")[0]: float(line.rsplit(" ", 1)[1])
                for line in get(metrics)[1].splitlines()
                if line.startswith("kafka_replicator_partition_stopped{")}
    try:
        with running(flow):
            produce(sandbox.source, name, [(0, b"big", b"x" * 20000, [], None), (1, b"k", b"small", [], None)])
            wait_until(lambda: flow.health().stopped, 60, what="partition 0 to stop")
            assert wait_until(lambda: stopped() or None, 10, what="the gauge") == {"0": 1.0}
    finally:
        probes.close()


def running_health(**fields) -> Health:
    values = dict(direction="sourceToTarget", member="sourceToTarget-0", state="running", generation=3,
                  since_commit=1.0, commit_bound=6.0, poll_bound=300.0, last_poll=time.time())
    return Health(**{**values, **fields})


def test_a_member_with_its_assignment_and_a_recent_commit_is_ready():
    assert not_ready(running_health()) == []


@pytest.mark.parametrize("fields, reason", [
    ({"generation": -1}, "sourceToTarget-0: no partition assignment yet"),
    ({"rebalancing": True}, "sourceToTarget-0: its group is rebalancing (a join, or its coordinator being found)"),
    ({"evicted": True}, "sourceToTarget-0: no heartbeat answered for a session"),
    ({"since_commit": 7.0}, "sourceToTarget-0: no commit went through for 7s (bound 6s)"),
    ({"state": "starting"}, "sourceToTarget-0: starting"),
    ({"state": "failed", "error": "ClusterError: x"}, "sourceToTarget-0: failed (ClusterError: x)"),
])
def test_readiness_names_what_is_missing(fields, reason):
    assert not_ready(running_health(**fields)) == [reason]


def test_a_loop_that_stopped_polling_is_not_alive_but_a_starting_one_is():
    assert not_alive(running_health(last_poll=time.time() - 301)) == [
        "sourceToTarget-0: its loop has not polled its group for 301s (bound 300s)"]
    assert not_alive(running_health()) == []
    assert not_alive(running_health(state="starting", last_poll=0.0)) == []


def test_a_taken_port_is_a_named_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"cannot serve probes and metrics on 127.0.0.1:{port}"):
            Endpoint("127.0.0.1", port, list, list)
