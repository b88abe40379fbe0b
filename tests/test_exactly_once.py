"""exactlyOnce: a read_committed reader of the target sees each source record once, in
order, whatever happens to the members, the brokers or the driver.

Every test counts, per partition, the records lost and the records read twice against
the source, and requires zero of both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

from kafka_support import committed, count, create_topic, flow_for, produce, read_all, running, wait_until
from replicator import map_topic
from test_resilience import PARTITIONS, Traffic

pytestmark = pytest.mark.kafka

SESSION_MS = 6000


def direction(name: str, mode: str = "batch", interval_ms: int = 200, **settings) -> dict:
    return {
        "consumerGroup": {"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": interval_ms,
                                             "sessionTimeoutMs": SESSION_MS,
                                             "heartbeatIntervalMs": 1000}},
        "replication": {"sourceToTarget": {"mode": mode, "exactlyOnce": True,
                                           "topics": [{"sourceTopicName": name}], **settings}},
    }


def write_config(path, sandbox, name, mode="batch", interval_ms=200) -> str:
    path.write_text(yaml.safe_dump(sandbox.config(**direction(name, mode, interval_ms))))
    return str(path)


class Member:
    """A member in its own process (`kafka-replicator replicate`), so that it can be killed,
    frozen and resumed for real."""

    def __init__(self, config: str, name: str = "sourceToTarget-0"):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "--log-level", "WARNING", "replicate",
             "--config", config, "--direction", "sourceToTarget", "--member", name],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def keys(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    return {p: [r.key for r in records] for p, records in read_all(bootstrap, topic).items()}


def lost_and_doubled(sandbox, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition: (records lost, records read twice) by a read_committed reader of the
    target, against the source."""
    source, target = keys(sandbox.source, topic), keys(sandbox.target, topic)
    found = {}
    for partition, expected in source.items():
        arrived = target.get(partition, [])
        lost = len(set(expected) - set(arrived))
        found[partition] = (lost, len(arrived) - len(set(arrived)))
        if not lost and found[partition][1] == 0:
            assert arrived == expected, f"partition {partition}: records out of order"
    print(f"\n{topic}: per partition (lost, read twice): {found}")
    return found


def written(bootstrap: str, topic: str) -> int:
    """Records in the topic's log, those of aborted transactions included."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted",
                             enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found = 0
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            found += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
        return found
    finally:
        consumer.close()


def each_record_once(sandbox, topic: str) -> bool:
    return all(found == (0, 0) for found in lost_and_doubled(sandbox, topic).values())


def two_members(sandbox, name: str, config: str) -> tuple[Member, Member]:
    """Two members of the group, once both have committed (each owns partitions)."""
    members = Member(config, "sourceToTarget-0"), Member(config, "sourceToTarget-1")
    wait_until(lambda: len(committed(sandbox.source, name)) == PARTITIONS, timeout=60,
               what="both members to commit")
    return members


def everything_arrived(sandbox, topic: str, total: int, timeout: float = 120) -> None:
    wait_until(lambda: count(sandbox.target, topic) >= total, timeout=timeout,
               what=f"{total} records of {topic} on the target, read committed")


def test_a_read_committed_reader_of_the_target_sees_each_record_once(sandbox, name):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    flow = flow_for(sandbox, **direction(name))
    with running(flow), Traffic(sandbox.source, name, 3000, per_second=3000):
        everything_arrived(sandbox, name, 3000)
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == 3000,
                   what="the source group to get the same positions")
    assert each_record_once(sandbox, name)


@pytest.mark.parametrize("mode", ["batch", "record"])
def test_a_member_killed_mid_stream_again_and_again_duplicates_nothing(sandbox, name, tmp_path, mode):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    # Transactions of a second: a kill almost always leaves an open one with copies in it.
    config = write_config(tmp_path / "config.yaml", sandbox, name, mode, interval_ms=1000)
    total = 12_000
    with Traffic(sandbox.source, name, total, per_second=2000):
        member = Member(config)
        for kill in range(3):
            arrived = count(sandbox.target, name)
            wait_until(lambda: count(sandbox.target, name) > arrived + 500, timeout=60,
                       what=f"copies under way before kill {kill + 1}")
            member.kill()
            member = Member(config)
    try:
        everything_arrived(sandbox, name, total)
    finally:
        member.stop()
    assert each_record_once(sandbox, name)
    aborted = written(sandbox.target, name) - total
    print(f"copies written by the killed members and aborted: {aborted}")
    assert aborted > 0, "no kill left an open transaction behind: the test proved nothing"


def test_one_of_two_members_gone_for_good_is_taken_over_without_duplicates(sandbox, name, tmp_path):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    config = write_config(tmp_path / "config.yaml", sandbox, name)
    total = 10_000
    with Traffic(sandbox.source, name, total, per_second=2000):
        first, second = two_members(sandbox, name, config)
        first.kill()
    try:
        everything_arrived(sandbox, name, total)
    finally:
        second.stop()
    assert each_record_once(sandbox, name)


def test_scaling_from_one_to_three_members_and_back_duplicates_nothing(sandbox, name, tmp_path):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    config = write_config(tmp_path / "config.yaml", sandbox, name)
    total = 16_000
    with Traffic(sandbox.source, name, total, per_second=2000):
        members = [Member(config, "sourceToTarget-0")]
        wait_until(lambda: count(sandbox.target, name) > 1000, timeout=60, what="copies under way")
        members += [Member(config, f"sourceToTarget-{i}") for i in (1, 2)]
        time.sleep(SESSION_MS / 1000 + 2)  # the group rebalances to three
        for member in members[1:]:
            member.stop()
    try:
        everything_arrived(sandbox, name, total)
    finally:
        members[0].stop()
    assert each_record_once(sandbox, name)


def test_a_zombie_member_resumed_after_its_partitions_moved_writes_nothing_visible(
        sandbox, name, tmp_path):
    """A member paused past its session: the group gives its partitions to the other member,
    which fences its transactional ids. Resumed, the zombie still holds fetched records and
    an open transaction; the target refuses them, and it starts again as a new member."""
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    config = write_config(tmp_path / "config.yaml", sandbox, name)
    total = 12_000
    with Traffic(sandbox.source, name, total, per_second=2000):
        zombie, other = two_members(sandbox, name, config)
        zombie.freeze()
        time.sleep(SESSION_MS / 1000 + 4)  # expired; the other member took everything over
        zombie.resume()
    try:
        everything_arrived(sandbox, name, total)
    finally:
        zombie.stop()
        other.stop()
    assert each_record_once(sandbox, name)


@pytest.mark.parametrize("cluster", ["target", "source"])
def test_a_broker_restart_mid_stream_duplicates_nothing(sandbox, name, cluster):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    flow = flow_for(sandbox, **direction(name))
    total = 8000
    with running(flow), Traffic(sandbox.source, name, total, per_second=2000):
        wait_until(lambda: count(sandbox.target, name) > 1000, timeout=60, what="copies under way")
        sandbox.sandbox.stop_broker(cluster)
        time.sleep(3)
        sandbox.sandbox.start_broker(cluster)
        everything_arrived(sandbox, name, total, timeout=180)
    assert each_record_once(sandbox, name)


def test_records_of_aborted_source_transactions_are_not_copied(sandbox, name):
    create_topic(sandbox.source, name, partitions=1)
    producer = KafkaProducer(bootstrap_servers=sandbox.source, transactional_id=f"tx-{name}")
    producer.init_transactions()
    for value, keep in ((b"committed-1", True), (b"aborted", False), (b"committed-2", True)):
        producer.begin_transaction()
        producer.send(name, key=value, value=value)
        producer.flush()
        producer.commit_transaction() if keep else producer.abort_transaction()
    producer.close()

    with running(flow_for(sandbox, **direction(name))):
        everything_arrived(sandbox, name, 2)
        wait_until(lambda: list(committed(sandbox.source, name).values()) == [6],
                   what="the group's position past the markers and the aborted record")
    assert [r.value for r in read_all(sandbox.target, name)[0]] == [b"committed-1", b"committed-2"]


@pytest.mark.parametrize("mode", ["batch", "record"])
def test_a_rejected_record_stops_its_partition_and_nothing_after_it_is_committed(sandbox, name, mode):
    create_topic(sandbox.source, name, partitions=2)
    create_topic(sandbox.target, name, partitions=2, configs={"max.message.bytes": "4000"})
    produce(sandbox.source, name, [(0, b"k0", b"small-0", [], None), (1, b"k1", b"small-1", [], None)])

    with running(flow_for(sandbox, **direction(name, mode))) as flow:
        everything_arrived(sandbox, name, 2)
        produce(sandbox.source, name, [(0, b"big", b"x" * 20000, [], None)])
        produce(sandbox.source, name, [(0, b"after", b"small-2", [], None),
                                       (1, b"k3", b"small-3", [], None)])
        wait_until(lambda: flow.health().stopped, what="partition 0 to stop")
        everything_arrived(sandbox, name, 3)  # partition 1 goes on
        wait_until(lambda: committed(sandbox.source, name).get(TopicPartition(name, 1)) == 2,
                   what="partition 1's commit")
        time.sleep(1)  # a few more transactions: none may carry partition 0 past the record

    assert committed(sandbox.source, name)[TopicPartition(name, 0)] == 1
    assert map_topic.positions({"bootstrap_servers": sandbox.target}, name, sandbox.sandbox.cluster_id("source"),
                               [TopicPartition(name, 0)]) == {TopicPartition(name, 0): 1}
    assert [r.value for r in read_all(sandbox.target, name)[0]] == [b"small-0"]


def test_on_error_skip_moves_past_a_rejected_record_in_the_same_transaction(sandbox, name):
    create_topic(sandbox.source, name, partitions=1)
    create_topic(sandbox.target, name, partitions=1, configs={"max.message.bytes": "4000"})
    produce(sandbox.source, name, [(0, b"a", b"small-0", [], None), (0, b"big", b"x" * 20000, [], None),
                                   (0, b"c", b"small-2", [], None)])

    with running(flow_for(sandbox, **direction(name, onError="skip"))) as flow:
        everything_arrived(sandbox, name, 2)
        wait_until(lambda: committed(sandbox.source, name).get(TopicPartition(name, 0)) == 3,
                   what="the commit past it")
        assert flow.metrics.snapshot().error_skipped == {name: 1}
    assert [r.value for r in read_all(sandbox.target, name)[0]] == [b"small-0", b"small-2"]


def test_an_active_active_topic_settles_with_each_record_once_on_each_side(sandbox, name):
    create_topic(sandbox.source, name, partitions=2)
    create_topic(sandbox.target, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, f"s{i}".encode(), b"from-source", [], None) for i in range(100)])
    produce(sandbox.target, name, [(i % 2, f"t{i}".encode(), b"from-target", [], None) for i in range(80)])
    route = {"exactlyOnce": True, "topics": [{"sourceTopicName": name}]}
    config = {"consumerGroup": {"sourceToTarget": f"{name}-s2t", "targetToSource": f"{name}-t2s"},
              "replication": {"sourceToTarget": route, "targetToSource": route}}
    forward = flow_for(sandbox, "sourceToTarget", **config)
    backward = flow_for(sandbox, "targetToSource", **config)

    with running(forward), running(backward):
        everything_arrived(sandbox, name, 180)
        wait_until(lambda: count(sandbox.source, name) >= 180, what="180 records on the source")
        wait_until(lambda: forward.metrics.snapshot().loop_skipped.get(name, 0) >= 80
                   and backward.metrics.snapshot().loop_skipped.get(name, 0) >= 100,
                   what="both flows to skip the other side's copies")

    for cluster in (sandbox.source, sandbox.target):
        keys_ = [r.key for batch in read_all(cluster, name).values() for r in batch]
        assert len(keys_) == 180 and len(set(keys_)) == 180


def test_a_target_that_refuses_transactions_stops_the_replicator_at_start_naming_what_to_grant(
        sandbox, name, tmp_path, monkeypatch):
    """The SASL user may write the topics but not use the replicator's transactional ids."""
    create_topic(sandbox.source, name, partitions=1)
    target = sandbox.info.target.sasl
    admin = KafkaAdminClient(bootstrap_servers=sandbox.target)
    denied = ACL(f"User:{target.username}", "*", ACLOperation.ALL, ACLPermissionType.DENY,
                 ResourcePattern(ResourceType.TRANSACTIONAL_ID, f"kafka-replicator.{name}.",
                                 ACLResourcePatternType.PREFIXED))
    admin.create_acls([denied])
    try:
        monkeypatch.setenv("TEST_SASL_PASSWORD", target.password())
        config = sandbox.config(targetKafka={
            "bootstrapServers": target.bootstrap_servers, "securityProtocol": "SASL_PLAINTEXT",
            "saslMechanism": "SCRAM-SHA-512", "saslUsername": target.username,
            "saslPasswordEnv": "TEST_SASL_PASSWORD"}, **direction(name))
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        replicate = subprocess.run(
            [sys.executable, "-m", "cluster.cli", "replicate", "--config", str(tmp_path / "config.yaml"),
             "--direction", "sourceToTarget"], capture_output=True, text=True, timeout=120)
    finally:
        admin.delete_acls([denied])
        admin.close()
    assert replicate.returncode == 4, replicate.stderr[-3000:]
    error = replicate.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: target cluster ({target.bootstrap_servers}): exactlyOnce: the target "
                            f"refused transactional id 'kafka-replicator.{name}.check'"), error
    assert f"--transactional-id kafka-replicator.{name}. --resource-pattern-type prefixed" in error
    assert target.password() not in replicate.stderr
