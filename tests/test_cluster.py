"""The replicator on a real local Ray cluster against the real sandbox brokers: failover.

Each test checks the target's exact per-partition contents against the source: every
record there, in order, intact (zero loss). Duplicates are allowed only where a member
died before committing what it had copied, and are bounded by exactly that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest
import ray
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from cluster.controller import Controller as ControllerActor
from cluster.loopback import on_loopback
from cluster.plan import NAMESPACE, plan
from cluster.supervisor import Supervisor
from workbench.traffic import PartitionCheck, check_partition
from kafka_support import (
    batch_bytes,
    committed,
    create_topic,
    produce,
    read_all,
    set_group_offsets,
    wait_until,
)
from replicator.config import parse_config
from replicator.offsets import describe_groups
from replicator.provenance import user_headers

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE = 10.0


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local Ray cluster for the module (starting one takes 5-20 s here)."""
    # address="local": a new cluster of its own, never one that `ray start` left running here.
    with on_loopback():
        context = ray.init(address="local", num_cpus=4, include_dashboard=False,
                           namespace=NAMESPACE, object_store_memory=100 * 1024 * 1024,
                           _node_ip_address="127.0.0.1", log_to_driver=True)
    yield context
    ray.shutdown()


@pytest.fixture
def supervised(ray_cluster):
    """Start a Supervisor for a config; stop its members when the test ends."""
    started: list[Supervisor] = []

    def start(config) -> Supervisor:
        supervisor = Supervisor(config)
        started.append(supervisor)
        supervisor.apply(plan(config))
        wait_until(lambda: all(s.running == s.planned for s in supervisor.poll()), 90,
                   interval=1, what="every member to run")
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop(GRACE)


def settings(sandbox, name, s2t=(), t2s=(), replicas=2, **group) -> dict:
    groups = {
        direction: {"groupId": f"{name}-{short}", "maxPollRecords": 100,
                    "sessionTimeoutMs": 30000, "heartbeatIntervalMs": 1000, **group}
        for direction, short in (("sourceToTarget", "s2t"), ("targetToSource", "t2s"))
    }
    replication = {
        direction: {"topics": [{"sourceTopicName": topic} for topic in topics]}
        for direction, topics in (("sourceToTarget", s2t), ("targetToSource", t2s)) if topics
    }
    return sandbox.config(consumerGroup=groups, replication=replication, replicaCount=replicas,
                          shutdownGracePeriodSeconds=GRACE)


class Feed:
    """Produces `total` distinct records round-robin over the partitions at `rate` per second."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, total: int, rate: float,
                 tag: str = "r"):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.total, self.rate, self.tag = total, rate, tag
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        started = time.monotonic()
        for i in range(self.total):
            pause = started + i / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            producer.send(self.topic, key=f"k{i}".encode(), value=f"{self.tag}-{i}".encode(),
                          partition=i % self.partitions)
        producer.flush()
        producer.close()

    def join(self) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the feed did not finish"


def identity(record) -> tuple:
    """What must arrive intact, hashable: key, value, user headers, timestamp."""
    return (record.key, record.value, tuple(user_headers(record.headers)), record.timestamp)


def everything(record) -> bool:
    return True


def compare(source: str, target: str, topic: str, sent=everything,
            arrived=everything) -> list[PartitionCheck]:
    """Every partition of `topic` on the target against the same partition on the source,
    of the records that `sent` and `arrived` select there."""
    on_source, on_target = read_all(source, topic), read_all(target, topic)
    return [check_partition(topic, p, [identity(r) for r in on_source.get(p, []) if sent(r)],
                            [identity(r) for r in on_target.get(p, []) if arrived(r)])
            for p in sorted(on_source.keys() | on_target.keys())]


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def caught_up(bootstrap: str, group: str, *topics: str) -> bool:
    """The group has committed every partition of `topics` up to its log end."""
    try:
        offsets = committed(bootstrap, group)
    except KafkaError:  # e.g. NotCoordinator while a new broker loads its offsets topic
        return False
    return all(offsets.get(tp, 0) == end
               for topic in topics for tp, end in end_offsets(bootstrap, topic).items())


def uncommitted(source: str, target: str, group: str, topic: str, partitions: list[int]) -> int:
    """Records on the target beyond the group's committed offsets, over `partitions`.

    Read right after a member died, this bounds what its successor can copy twice: it
    resumes from the committed offsets, and everything the dead member copied beyond
    them is on the target already. Committed offsets read a moment early only make the
    bound larger, and so do target records copied a moment late.
    """
    offsets = committed(source, group)
    time.sleep(1)  # produce requests the dead member had already sent land on the target
    arrived = read_all(target, topic)
    return sum(max(0, len(arrived.get(p, [])) - offsets.get(TopicPartition(topic, p), 0))
               for p in partitions)


def assigned(supervisor: Supervisor, member: str) -> list[str]:
    return ray.get(supervisor.actor(member).health.remote(), timeout=30).assigned


def on_target(sandbox, topic: str) -> int:
    return sum(len(records) for records in read_all(sandbox.target, topic).values())


def test_killed_member_is_restarted_and_loses_nothing(sandbox, name, supervised):
    """ray.kill(no_restart=False) mid-stream: Ray restarts the actor, which rejoins as the
    same static member, gets the same partitions back (the other member keeps its own),
    and resumes from the committed offsets: duplicates only on its partitions, at most
    what it had copied beyond its last commit."""
    create_topic(sandbox.source, name, partitions=4)
    config = parse_config(settings(sandbox, name, s2t=[name]))
    supervisor = supervised(config)
    started = time.monotonic()
    feed = Feed(sandbox.source, name, 4, total=3000, rate=400)
    wait_until(lambda: on_target(sandbox, name) >= 800, 60, interval=0.5, what="copying to begin")

    victim = "sourceToTarget-0"
    before = assigned(supervisor, victim)
    survivor_partitions = assigned(supervisor, "sourceToTarget-1")
    ray.kill(supervisor.actor(victim), no_restart=False)
    killed = time.monotonic()
    bound = uncommitted(sandbox.source, sandbox.target, f"{name}-s2t", name,
                        [int(p.rsplit("[", 1)[1].rstrip("]")) for p in before])
    wait_until(lambda: (lambda s: s.restarts == 1 and s.running == 2)(supervisor.poll()[0]),
               60, interval=1, what="Ray to restart the member")
    wait_until(lambda: assigned(supervisor, victim) == before, 30, interval=0.5,
               what="the restarted member to get its partitions back")
    back = time.monotonic() - killed
    assert assigned(supervisor, "sourceToTarget-1") == survivor_partitions

    feed.join()
    wait_until(lambda: caught_up(sandbox.source, f"{name}-s2t", name), 90, interval=1,
               what="the group to commit everything")
    checks = compare(sandbox.source, sandbox.target, name)
    duplicates = sum(c.duplicates for c in checks)
    print(f"\nkilled member: {sum(c.sent for c in checks)} records, {duplicates} duplicates "
          f"(bound {bound}), back in {back:.1f}s, all copied in {time.monotonic() - started:.1f}s")
    assert all(c.exact for c in checks), checks
    assert duplicates <= bound
    assert all(c.duplicates == 0 for c in checks if f"{name}[{c.partition}]" in survivor_partitions)


def test_survivor_takes_over_the_partitions_of_a_member_killed_for_good(sandbox, name, supervised):
    """ray.kill(no_restart=True): the member stays gone (Ray restarts only crashes); once its
    session times out the group rebalances and the survivor copies its partitions from
    their committed offsets: duplicates at most what the dead member copied uncommitted."""
    create_topic(sandbox.source, name, partitions=4)
    config = parse_config(settings(sandbox, name, s2t=[name], sessionTimeoutMs=6000))
    supervisor = supervised(config)
    started = time.monotonic()
    feed = Feed(sandbox.source, name, 4, total=3000, rate=400)
    wait_until(lambda: on_target(sandbox, name) >= 800, 60, interval=0.5, what="copying to begin")

    victim_partitions = assigned(supervisor, "sourceToTarget-1")
    ray.kill(supervisor.actor("sourceToTarget-1"), no_restart=True)
    killed = time.monotonic()
    bound = uncommitted(sandbox.source, sandbox.target, f"{name}-s2t", name,
                        [int(p.rsplit("[", 1)[1].rstrip("]")) for p in victim_partitions])
    wait_until(lambda: len(assigned(supervisor, "sourceToTarget-0")) == 4, 60, interval=1,
               what="the survivor to own every partition")
    takeover = time.monotonic() - killed
    status = supervisor.poll()[0]
    assert (status.planned, status.running, status.restarts) == (2, 1, 0)

    feed.join()
    wait_until(lambda: caught_up(sandbox.source, f"{name}-s2t", name), 90, interval=1,
               what="the group to commit everything")
    checks = compare(sandbox.source, sandbox.target, name)
    duplicates = sum(c.duplicates for c in checks)
    print(f"\nmember killed for good: {sum(c.sent for c in checks)} records, {duplicates} duplicates "
          f"(bound {bound}), taken over in {takeover:.1f}s, all copied in "
          f"{time.monotonic() - started:.1f}s")
    assert all(c.exact for c in checks), checks
    assert duplicates <= bound


def test_scaling_a_direction_from_one_to_three_members_spreads_the_partitions(
        sandbox, name, supervised):
    """Two members join while records flow. With cooperative-sticky assignment the first
    member keeps copying what it keeps, and commits what it acknowledged before it hands
    a partition over; the new owner resumes there. Should that commit fail, the new owner
    replays at most one auto-commit interval (1 s): at 400 records/s over 6 partitions
    that is under 100 records per moved partition, the bound asserted."""
    create_topic(sandbox.source, name, partitions=6)
    one = settings(sandbox, name, s2t=[name], replicas=1)
    supervisor = supervised(parse_config(one))
    started = time.monotonic()
    feed = Feed(sandbox.source, name, 6, total=3000, rate=400)
    wait_until(lambda: on_target(sandbox, name) >= 600, 60, interval=0.5, what="copying to begin")

    supervisor.apply(plan(parse_config({**one, "replicaCount": 3})))
    scaled = time.monotonic()
    members = [f"sourceToTarget-{i}" for i in range(3)]
    wait_until(lambda: [len(assigned(supervisor, m)) for m in members] == [2, 2, 2], 90,
               interval=1, what="two partitions per member")
    spread = time.monotonic() - scaled

    feed.join()
    wait_until(lambda: caught_up(sandbox.source, f"{name}-s2t", name), 90, interval=1,
               what="the group to commit everything")
    checks = compare(sandbox.source, sandbox.target, name)
    duplicates = sum(c.duplicates for c in checks)
    print(f"\nscaled 1 → 3: {sum(c.sent for c in checks)} records, {duplicates} duplicates, "
          f"spread in {spread:.1f}s, all copied in {time.monotonic() - started:.1f}s")
    assert all(c.exact for c in checks), checks
    assert duplicates <= 100 * 4  # four of the six partitions moved


def test_both_directions_with_an_active_active_topic_settle_without_loops(
        sandbox, name, supervised):
    """One topic per direction plus one topic replicated both ways, all fed at once. Each
    side ends with its own records and exactly one copy of the other side's: the copies
    carry the replicator's registered producer id, and the other direction skips them
    instead of sending them back."""
    forward, backward, both = f"{name}-fwd", f"{name}-back", f"{name}-both"
    for cluster, topic in ((sandbox.source, forward), (sandbox.target, backward),
                           (sandbox.source, both), (sandbox.target, both)):
        create_topic(cluster, topic, partitions=3)
    config = parse_config(settings(sandbox, name, s2t=[forward, both], t2s=[backward, both]))
    supervisor = supervised(config)
    started = time.monotonic()
    feeds = [Feed(sandbox.source, forward, 3, 1000, 150, "fwd"),
             Feed(sandbox.target, backward, 3, 1000, 150, "back"),
             Feed(sandbox.source, both, 3, 1000, 150, "src"),
             Feed(sandbox.target, both, 3, 1000, 150, "tgt")]
    for feed in feeds:
        feed.join()

    def settled() -> bool:
        return (caught_up(sandbox.source, f"{name}-s2t", forward, both)
                and caught_up(sandbox.target, f"{name}-t2s", backward, both))

    wait_until(settled, 90, interval=1, what="both groups to commit everything")
    time.sleep(3)  # a loop would show as records that keep coming
    assert settled()
    def fed(tag: str):
        return lambda record: record.value.startswith(f"{tag}-".encode())

    checks = (compare(sandbox.source, sandbox.target, forward)
              + compare(sandbox.target, sandbox.source, backward)
              # On each side of the shared topic: its originals against the other side's copies.
              + compare(sandbox.source, sandbox.target, both, fed("src"), fed("src"))
              + compare(sandbox.target, sandbox.source, both, fed("tgt"), fed("tgt")))
    skipped = sum(s.totals.loop_skipped for s in _member_stats(supervisor))
    duplicates = sum(c.duplicates for c in checks)
    print(f"\nboth directions: {sum(c.sent for c in checks)} records checked, {duplicates} "
          f"duplicates, {skipped} copies not sent back, settled in {time.monotonic() - started:.1f}s")
    assert all(c.exact for c in checks), checks
    assert duplicates == 0  # nothing failed, so nothing was replayed
    for cluster in (sandbox.source, sandbox.target):
        assert sum(len(r) for r in read_all(cluster, both).values()) == 2000
    assert skipped == 2000  # each side's copies of the active-active topic, skipped once


def test_sigterm_stops_the_driver_within_the_grace_period_and_a_restart_resumes(
        sandbox, name, ray_cluster, tmp_path):
    """`python -m cluster.driver` against this Ray cluster. SIGTERM mid-stream: the members
    stop polling, flush, commit what the target acknowledged and close, within
    shutdownGracePeriodSeconds; so the committed offsets cover exactly what is on the
    target, and the restarted driver resumes there without a single duplicate.

    The stop comes once the group is stable: during a rebalance the broker refuses the
    final commit (RebalanceInProgress) and the next owner replays from the previous one,
    which is at-least-once as in the failover tests above, not what this test is about."""
    create_topic(sandbox.source, name, partitions=4)
    settings_ = settings(sandbox, name, s2t=[name])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings_))
    group = f"{name}-s2t"

    first = _driver(config_file, ray_cluster, tmp_path / "first.log")
    wait_until(lambda: _owners(parse_config(settings_)) == {"sourceToTarget-0", "sourceToTarget-1"},
               90, interval=1, what="both members to own partitions")
    feed = Feed(sandbox.source, name, 4, total=4500, rate=300)
    wait_until(lambda: on_target(sandbox, name) >= 600, 90, interval=0.5, what="copying to begin")
    stopped_in = _terminate(first)
    log = (tmp_path / "first.log").read_text()
    assert first.returncode == 0, log
    assert stopped_in < GRACE, log
    assert "SIGTERM received" in log and "sourceToTarget-1 stopped (stopped)" in log
    offsets = committed(sandbox.source, group)
    arrived = read_all(sandbox.target, name)
    assert {p: len(records) for p, records in arrived.items()} == \
        {tp.partition: offset for tp, offset in offsets.items() if offset}, log

    second = _driver(config_file, ray_cluster, tmp_path / "second.log")
    feed.join()
    wait_until(lambda: caught_up(sandbox.source, group, name), 90, interval=1,
               what="the restarted driver to commit everything")
    restarted_in = _terminate(second)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()
    checks = compare(sandbox.source, sandbox.target, name)
    print(f"\nSIGTERM: {sum(c.sent for c in checks)} records, {sum(c.duplicates for c in checks)} "
          f"duplicates, {sum(offsets.values())} copied before the stop; stops took "
          f"{stopped_in:.1f}s and {restarted_in:.1f}s (grace {GRACE:.0f}s)")
    assert all(c.exact and c.duplicates == 0 for c in checks), checks


def test_with_exactly_once_a_driver_stopped_or_killed_and_restarted_duplicates_nothing(
        sandbox, name, ray_cluster, tmp_path):
    """exactlyOnce: SIGTERM the driver while copying and restart it, then SIGKILL it and
    restart it: a read_committed reader of the target sees each record once, in order.
    (Here at-least-once also shows no duplicate: the members stop cleanly in both cases.
    The member kill and zombie tests of test_exactly_once.py are where the two differ.)"""
    create_topic(sandbox.source, name, partitions=4)
    settings_ = settings(sandbox, name, s2t=[name])
    settings_["replication"]["sourceToTarget"]["exactlyOnce"] = True
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings_))
    group = f"{name}-s2t"

    driver = _driver(config_file, ray_cluster, tmp_path / "first.log")
    feed = Feed(sandbox.source, name, 4, total=4500, rate=300)
    wait_until(lambda: on_target(sandbox, name) >= 600, 90, interval=0.5, what="copying to begin")
    _terminate(driver)
    driver = _driver(config_file, ray_cluster, tmp_path / "second.log")
    wait_until(lambda: on_target(sandbox, name) >= 1200, 90, interval=0.5, what="copying to resume")
    driver.kill()
    driver.wait(timeout=30)
    driver = _driver(config_file, ray_cluster, tmp_path / "third.log")
    feed.join()
    wait_until(lambda: caught_up(sandbox.source, group, name), 120, interval=1,
               what="the restarted driver to commit everything")
    _terminate(driver)
    checks = compare(sandbox.source, sandbox.target, name)
    print(f"\nexactly once, driver stopped and killed: {sum(c.sent for c in checks)} records, "
          f"{sum(c.duplicates for c in checks)} duplicates, {sum(c.missing for c in checks)} lost")
    assert all(c.exact and c.duplicates == 0 for c in checks), checks


def test_a_config_error_in_a_member_stops_the_driver_with_the_error(
        sandbox, name, ray_cluster, tmp_path):
    """Retrying cannot fix a config error: the driver stops every member and exits 3,
    naming the problem, so that the operator (or Kubernetes' CrashLoopBackOff) sees it."""
    create_topic(sandbox.source, name, partitions=1)
    config = settings(sandbox, name, s2t=[name])
    config["replication"]["sourceToTarget"]["createTopics"] = False
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    driver = _driver(config_file, ray_cluster, tmp_path / "driver.log")
    driver.wait(timeout=90)
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 3, log
    assert "sourceToTarget-0 stopped on a config error" in log
    assert "createTopics is false" in log


def test_the_driver_scales_a_direction_when_its_replica_count_changes_in_the_config_file(
        sandbox, name, ray_cluster, tmp_path):
    """As a mounted ConfigMap changes on Kubernetes: the driver reads the file again, starts
    the members a larger replicaCount adds and stops those a smaller one removes, without a
    restart; the group spreads the partitions over whoever runs (a removed member's once its
    session expires: static members do not leave their group)."""
    create_topic(sandbox.source, name, partitions=4)
    settings_ = settings(sandbox, name, s2t=[name], replicas=1, sessionTimeoutMs=6000)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings_))
    config = parse_config(settings_)
    driver = _driver(config_file, ray_cluster, tmp_path / "driver.log")
    wait_until(lambda: _owners(config) == {"sourceToTarget-0"}, 90, interval=1,
               what="the one member to own every partition")

    config_file.write_text(yaml.safe_dump({**settings_, "replicaCount": 3}))
    wait_until(lambda: _owners(config) == {f"sourceToTarget-{i}" for i in range(3)}, 90,
               interval=1, what="three members to share the partitions")
    config_file.write_text(yaml.safe_dump({**settings_, "replicaCount": 2}))
    wait_until(lambda: _owners(config) == {"sourceToTarget-0", "sourceToTarget-1"}, 90,
               interval=1, what="two members to share the partitions")

    _terminate(driver)
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, log
    assert "scaling sourceToTarget 1 → 3 members" in log, log
    assert "scaling sourceToTarget 3 → 2 members" in log and "sourceToTarget-2 stopped (stopped)" in log


def test_the_driver_keeps_running_on_an_invalid_config_change(sandbox, name, ray_cluster, tmp_path):
    """A bad edit (here a negative replicaCount, read at once on SIGHUP) is logged with the
    field and ignored: the members keep running, and so does the driver."""
    create_topic(sandbox.source, name, partitions=2)
    settings_ = settings(sandbox, name, s2t=[name], replicas=1)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings_))
    config = parse_config(settings_)
    driver = _driver(config_file, ray_cluster, tmp_path / "driver.log")
    wait_until(lambda: _owners(config) == {"sourceToTarget-0"}, 90, interval=1,
               what="the member to own every partition")

    config_file.write_text(yaml.safe_dump({**settings_, "replicaCount": -1}))
    driver.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeps running on the config it has" in (tmp_path / "driver.log").read_text(),
               30, interval=0.5, what="the driver to log the invalid file")

    assert driver.poll() is None
    assert _owners(config) == {"sourceToTarget-0"}
    _terminate(driver)
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, log
    assert "SIGHUP received" in log and "replicaCount" in log


@ray.remote(num_cpus=0)
class Broken:
    """Stands in for a member whose methods raise (a bug, a lost object)."""

    def stats(self):
        raise RuntimeError("the metrics exporter broke")

    def stop(self, timeout, leave_group=False):
        raise RuntimeError("the metrics exporter broke")


def test_a_member_whose_answer_fails_is_reported_and_the_supervisor_goes_on(
        sandbox, name, supervised, caplog):
    create_topic(sandbox.source, name, partitions=2)
    supervisor = supervised(parse_config(settings(sandbox, name, s2t=[name])))
    wait_until(lambda: supervisor.poll()[0].running == 2, 60, interval=1, what="two members")
    healthy = supervisor.actor("sourceToTarget-1")
    supervisor._members["sourceToTarget-1"].actor = Broken.remote()
    ray.kill(healthy, no_restart=True)

    status = supervisor.poll()[0]

    assert (status.planned, status.running) == (2, 1)
    assert "sourceToTarget-1 did not answer: RuntimeError: the metrics exporter broke" in caplog.text


def test_members_export_their_figures_as_ray_metrics(sandbox, name, supervised, ray_cluster):
    """Records, bytes, lag, latency, commits and assigned partitions reach Ray's Prometheus
    endpoint, tagged by direction, topic and member."""
    create_topic(sandbox.source, name, partitions=2)
    supervisor = supervised(parse_config(settings(sandbox, name, s2t=[name], replicas=1)))
    Feed(sandbox.source, name, 2, total=500, rate=1000).join()
    wait_until(lambda: caught_up(sandbox.source, f"{name}-s2t", name), 60, interval=1,
               what="the group to commit everything")
    worker = ray.get(supervisor.actor("sourceToTarget-0").stats.remote(), timeout=30).incarnation
    url = f"http://127.0.0.1:{ray_cluster.address_info['metrics_export_port']}/metrics"

    def exported() -> dict[str, float]:
        """This member's series (Ray tags each with the worker's id), summed per metric."""
        found: dict[str, float] = {}
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith("ray_kafka_replicator_") and f'WorkerId="{worker}"' in line:
                assert 'direction="sourceToTarget"' in line and 'member="sourceToTarget-0"' in line
                series, value = line.rsplit(" ", 1)
                metric = series.split("{")[0]
                if "topic=" in series:
                    assert f'topic="{name}"' in series
                found[metric] = found.get(metric, 0.0) + float(value)
        return found

    def complete() -> dict[str, float] | None:
        found = exported()
        done = (found.get("ray_kafka_replicator_records_replicated_total") == 500
                and found.get("ray_kafka_replicator_consumer_lag") == 0)
        return found if done else None

    metrics = wait_until(complete, 60, interval=2, what="500 records and no lag in the metrics")
    # Every batch was written once (nothing failed), so the bytes counted are the target's.
    assert metrics["ray_kafka_replicator_bytes_replicated_total"] == batch_bytes(sandbox.target, name, 2)
    assert metrics["ray_kafka_replicator_replication_latency_ms_count"] > 0
    assert metrics["ray_kafka_replicator_topic_latency_ms_count"] == metrics["ray_kafka_replicator_replication_latency_ms_count"]
    assert metrics["ray_kafka_replicator_batches_written_total"] > 0
    assert metrics["ray_kafka_replicator_commits_total"] > 0
    assert metrics["ray_kafka_replicator_assigned_partitions"] == 2


def test_the_controller_exports_the_backlog_of_partitions_nobody_owns_as_ray_metrics(sandbox, name, ray_cluster):
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(0, b"k", b"v%d" % i, [], None) for i in range(7)])
    config = parse_config(settings(sandbox, name, s2t=[name]))
    set_group_offsets(sandbox.source, f"{name}-s2t", {TopicPartition(name, 0): 2, TopicPartition(name, 1): 0})
    controller = ControllerActor.options(num_cpus=0).remote(config, "sourceToTarget")
    url = f"http://127.0.0.1:{ray_cluster.address_info['metrics_export_port']}/metrics"

    def exported() -> dict[str, float] | None:
        found = {}
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith("ray_kafka_replicator_") and (f'topic="{name}"' in line or "ownerless" in line):
                series, value = line.rsplit(" ", 1)
                partition = re.search(r'partition="(\d+)"', series)
                found[series.split("{")[0] + (f"[{partition.group(1)}]" if partition else "")] = float(value)
        return found if len(found) == 5 else None
    try:
        found = wait_until(exported, 90, interval=2, what="the backlog in Ray's metrics")
    finally:
        ray.get(controller.stop.remote(10), timeout=30)
        ray.kill(controller)
    assert found["ray_kafka_replicator_committed_lag[0]"] == 5 and found["ray_kafka_replicator_committed_lag[1]"] == 0
    assert 0 < found["ray_kafka_replicator_lag_seconds[0]"] < 120 and found["ray_kafka_replicator_lag_seconds[1]"] == 0
    assert found["ray_kafka_replicator_partitions_ownerless"] == 2


def test_the_drivers_controller_exports_backlog_series_that_reach_ray_metrics(sandbox, name, ray_cluster, tmp_path):
    """The driver (a Ray Client in the chart's Deployment mode) exports nothing itself: its
    controller actor does, tagged with its own worker id, beside the members' series."""
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(p, b"k", b"v", [], None) for p in (0, 1, 0)])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings(sandbox, name, s2t=[name], replicas=1)))
    url = f"http://127.0.0.1:{ray_cluster.address_info['metrics_export_port']}/metrics"

    def caught_up_in_metrics() -> dict[str, float] | None:
        lines = urllib.request.urlopen(url, timeout=10).read().decode().splitlines()
        workers = {re.search(r'WorkerId="(\w+)"', line).group(1) for line in lines
                   if line.startswith("ray_kafka_replicator_committed_lag{") and f'topic="{name}"' in line}
        found = {}
        for line in lines:
            worker = re.search(r'WorkerId="(\w+)"', line)
            if line.startswith("ray_kafka_replicator_") and worker and worker.group(1) in workers:
                series, value = line.rsplit(" ", 1)
                partition = re.search(r'partition="(\d+)"', series)
                found[series.split("{")[0] + (f"[{partition.group(1)}]" if partition else "")] = float(value)
        return found if found and all(value == 0 for value in found.values()) and len(found) == 5 else None
    driver = _driver(config_file, ray_cluster, tmp_path / "driver.log")
    try:
        found = wait_until(caught_up_in_metrics, 120, interval=2,
                           what="the controller's series: every partition copied and owned")
    finally:
        _terminate(driver)
    assert set(found) == {"ray_kafka_replicator_committed_lag[0]", "ray_kafka_replicator_committed_lag[1]",
                          "ray_kafka_replicator_lag_seconds[0]", "ray_kafka_replicator_lag_seconds[1]",
                          "ray_kafka_replicator_partitions_ownerless"}


def test_members_log_json_lines_with_their_direction_and_member_when_asked(sandbox, name, ray_cluster, capfd):
    """--log-format json reaches the actors: Ray forwards their lines to this process."""
    create_topic(sandbox.source, name, partitions=1)
    supervisor = Supervisor(parse_config(settings(sandbox, name, s2t=[name], replicas=1)), log_format="json")
    try:
        supervisor.apply(plan(supervisor.config))

        def logged() -> list[dict]:
            found = []
            for line in re.sub(r"\x1b\[[0-9;]*m", "", capfd.readouterr().err).splitlines():
                _, brace, rest = line.partition("{")  # behind Ray's "(sourceToTarget-0 pid=...) "
                if brace and '"logger": "replicator.' in rest:
                    found.append(json.loads(brace + rest))
            seen.extend(found)
            return [line for line in seen if "partition assignment" in line["message"]]

        seen: list[dict] = []
        line = wait_until(logged, 60, interval=1, what="the member's assignment as a JSON line")[0]
        assert (line["direction"], line["member"], line["level"]) == ("sourceToTarget", "sourceToTarget-0", "INFO")
    finally:
        supervisor.stop(GRACE)


def test_records_lost_upstream_are_exported_by_topic(sandbox, name, supervised, ray_cluster):
    create_topic(sandbox.source, name, partitions=1)
    produce(sandbox.source, name, [(0, f"k{i}".encode(), b"v", [], None) for i in range(10)])
    tp = TopicPartition(name, 0)
    set_group_offsets(sandbox.source, f"{name}-s2t", {tp: 3})
    admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
    try:
        admin.delete_records({tp: 7})
    finally:
        admin.close()
    supervised(parse_config(settings(sandbox, name, s2t=[name], replicas=1)))
    url = f"http://127.0.0.1:{ray_cluster.address_info['metrics_export_port']}/metrics"

    def lost() -> float | None:
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith("ray_kafka_replicator_records_lost_upstream_total") and f'topic="{name}"' in line:
                assert 'direction="sourceToTarget"' in line and 'member="sourceToTarget-0"' in line
                return float(line.rsplit(" ", 1)[1])
        return None

    assert wait_until(lost, 60, interval=2, what="the lost records in the metrics") == 4


def test_the_controller_of_a_direction_syncs_the_chosen_groups_to_the_target(sandbox, name, supervised):
    create_topic(sandbox.source, name, partitions=2)
    Feed(sandbox.source, name, 2, total=200, rate=1000).join()
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 30, TopicPartition(name, 1): 60})
    config = settings(sandbox, name, s2t=[name])
    config["replication"]["sourceToTarget"]["syncGroupOffsets"] = {
        "enabled": True, "groups": [f"{name}-app"], "intervalSeconds": 1}

    supervised(parse_config(config))

    # The partitions were copied in order from offset 0, so each translates to itself.
    wait_until(lambda: committed(sandbox.target, f"{name}-app") == {
        TopicPartition(name, 0): 30, TopicPartition(name, 1): 60}, 60, interval=1,
        what="the group's offsets on the target")


def rss_mib(actor) -> float:
    """The resident memory of an actor's process (on this machine: a local Ray cluster)."""
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def test_a_killed_controller_is_restarted_by_ray_while_the_members_copy_on(sandbox, name, supervised, caplog):
    """ray.kill(no_restart=False) kills the controller's process: the members go on copying
    with the topics it published last, Ray starts it again, and the new one follows a topic
    created since."""
    caplog.set_level("INFO", logger="cluster")
    create_topic(sandbox.source, f"{name}-a", partitions=2)
    config = settings(sandbox, name)
    config["replication"] = {"sourceToTarget": {"include": [f"{re.escape(name)}-.*"], "topicRefreshSeconds": 1}}
    supervisor = supervised(parse_config(config))
    controller = supervisor.actor("controller-sourceToTarget")
    first = ray.get(controller.stats.remote(), timeout=30).incarnation
    feed = Feed(sandbox.source, f"{name}-a", 2, total=2000, rate=200)
    wait_until(lambda: on_target(sandbox, f"{name}-a") >= 200, 60, interval=0.5, what="copying to begin")

    ray.kill(controller, no_restart=False)
    killed = time.monotonic()
    copied_at_kill = on_target(sandbox, f"{name}-a")
    wait_until(lambda: on_target(sandbox, f"{name}-a") >= copied_at_kill + 100, 30, interval=0.2,
               what="the members to copy on")
    wait_until(lambda: ray.get(controller.stats.remote(), timeout=30).incarnation != first, 60, interval=0.5,
               what="Ray to restart the controller")
    back = time.monotonic() - killed
    create_topic(sandbox.source, f"{name}-b", partitions=1)
    produce(sandbox.source, f"{name}-b", [(0, None, f"b{i}".encode(), [], None) for i in range(10)])
    wait_until(lambda: on_target(sandbox, f"{name}-b") == 10, 60, interval=0.5, what="the new topic's copy")
    feed.join()
    wait_until(lambda: caught_up(sandbox.source, f"{name}-s2t", f"{name}-a"), 90, interval=1,
               what="the group to commit everything")
    statuses = supervisor.poll()

    print(f"\ncontroller back in {back:.1f}s; the members copied on meanwhile; resident memory: "
          f"controller {rss_mib(controller):.0f} MiB, member {rss_mib(supervisor.actor('sourceToTarget-0')):.0f} MiB")
    assert all(check.exact and check.duplicates == 0 for check in compare(sandbox.source, sandbox.target, f"{name}-a"))
    assert statuses[0].restarts == 0 and statuses[0].running == 2  # the members were not touched
    assert "controller-sourceToTarget was restarted by Ray" in caplog.text


@dataclass
class LostMember:
    """One driver run with --health-port: its members replicating, then one killed for good."""

    ready_before: tuple[int, str]
    ready_after: tuple[int, str]
    alive_after: tuple[int, str]
    log: str


@pytest.fixture(scope="module")
def member_lost_for_good(sandbox, ray_cluster, tmp_path_factory) -> LostMember:
    tmp = tmp_path_factory.mktemp("lost-member")
    name = f"lost-member-{uuid.uuid4().hex[:6]}"
    create_topic(sandbox.source, name, partitions=4)
    settings_ = settings(sandbox, name, s2t=[name], sessionTimeoutMs=6000, autoCommitIntervalMs=500)
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings_))
    log_file = tmp / "driver.log"
    driver = _driver(config_file, ray_cluster, log_file, "--health-port", "0")
    try:
        base = wait_until(lambda: re.search(r"serving /healthz, /readyz on (http://127\.0\.0\.1:\d+)",
                                            log_file.read_text()), 60, what="the driver's probes").group(1)
        ready_before = wait_until(lambda: (lambda a: a if a[0] == 200 else None)(_get(f"{base}/readyz")),
                                  90, interval=1, what="the driver ready")
        before = _survivor_rebalances(log_file.read_text())
        ray.kill(ray.get_actor("sourceToTarget-1", namespace=NAMESPACE), no_restart=True)
        wait_until(lambda: all(after > earlier for after, earlier in
                               zip(_survivor_rebalances(log_file.read_text()), before)),
                   60, interval=1, what="the survivor's rebalance in the driver's output")
        ready_after, alive_after = _get(f"{base}/readyz"), _get(f"{base}/healthz")
    finally:
        _terminate(driver)
    return LostMember(ready_before, ready_after, alive_after, log_file.read_text())


def test_the_driver_is_ready_once_every_member_replicates(member_lost_for_good):
    assert member_lost_for_good.ready_before == (200, "ok\n"), member_lost_for_good.log


def test_the_driver_is_not_ready_but_alive_while_a_planned_member_is_gone(member_lost_for_good):
    status, text = member_lost_for_good.ready_after
    assert status == 503 and "sourceToTarget-1: not running" in text, (text, member_lost_for_good.log)
    assert member_lost_for_good.alive_after == (200, "ok\n")


def _survivor_rebalances(log: str) -> tuple[int, int]:
    """sourceToTarget-0's rebalance lines in the driver's output: its own, as Ray forwards them
    ("(sourceToTarget-0 pid=...) ..."), and the driver's."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines()  # Ray colours the prefix
    return (sum(line.startswith("(sourceToTarget-0 ") and "rebalance complete" in line for line in lines),
            sum("cluster.supervisor: sourceToTarget-0: rebalance: group" in line for line in lines))


def test_a_survivors_rebalance_reaches_the_driver_output_from_the_member_and_the_driver(
        member_lost_for_good):
    """The fixture waited for both to grow after the kill; the grep finds them."""
    found = [line for line in member_lost_for_good.log.splitlines() if re.search("(?i)rebalance", line)]
    assert all(_survivor_rebalances("\n".join(found))), found


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def _owners(config) -> set[str]:
    """The members that own a partition, once every partition has an owner."""
    try:
        rows = describe_groups(config)
    except KafkaError:
        return set()
    return {row.owner for row in rows} if all(row.owner for row in rows) else set()


def _member_stats(supervisor: Supervisor):
    names = [f"{d}-{i}" for d in ("sourceToTarget", "targetToSource") for i in range(2)]
    return ray.get([supervisor.actor(n).stats.remote() for n in names], timeout=30)


def _driver(config_file, ray_cluster, log_file, *options: str) -> subprocess.Popen:
    """The driver as operators run it, joining this test's Ray cluster as its own job."""
    env = {**os.environ, "PYTHONPATH": REPO}
    with open(log_file, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cluster.driver", "--config", str(config_file),
             "--address", ray_cluster.address_info["gcs_address"], "--progress-seconds", "5", *options],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _terminate(driver: subprocess.Popen) -> float:
    started = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    driver.wait(timeout=3 * GRACE)
    return time.monotonic() - started
