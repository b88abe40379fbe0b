"""`replicator.wire` against a real broker: every header rewrite accepted, a wrong CRC refused,
and a group join answered between two polls taken."""

from __future__ import annotations

import struct
import time

import pytest
from kafka.errors import CorruptRecordError
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer
from kafka.admin import NewPartitions
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

from batch_support import make, rec
from kafka_support import create_topic, read_all
from replicator import batches, wire
from replicator.config import parse_config
from replicator.group_member import source_consumer

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def target(sandbox):
    link = wire.Wire({"bootstrap_servers": [sandbox.target]}, 1 << 20)
    link.bootstrap(15_000)
    yield link
    link.close()


def write(link: wire.Wire, tp: TopicPartition, data: bytes):
    """Produce one batch; the broker's error class, or None."""
    link.track([tp.topic])
    deadline = time.monotonic() + 30
    while link.leader(tp) is None:
        assert time.monotonic() < deadline, "no leader for the test topic"
        link.refresh()
        time.sleep(0.1)
    future = link.send(link.leader(tp), wire.produce_request({tp: data}, 10_000))
    while not future.is_done:
        time.sleep(0.01)
    assert future.exception is None, future.exception
    return wire.produced(future.value)[tp][0]


@pytest.mark.parametrize("source", [
    {"base_offset": 123_456},
    {"producer_id": 77, "producer_epoch": 4, "base_sequence": 900},
    {"attributes": batches.TRANSACTIONAL, "producer_id": 78, "producer_epoch": 0, "base_sequence": 0},
    {"codec": "zstd", "base_offset": 5},
])
def test_the_broker_accepts_a_rewritten_batch(sandbox, name, target, source):
    create_topic(sandbox.target, name, partitions=1)
    producer_id, epoch = wire.init_producer_id(target, 15_000)
    batch = make([rec(0, b"a", b"1", [("h", None)]), rec(1, None, None)], **source)

    error = write(target, TopicPartition(name, 0), batches.rewrite(batch, producer_id, epoch, 0))

    assert error is None
    [records] = read_all(sandbox.target, name).values()
    assert [(r.key, r.value, r.headers) for r in records] == [(b"a", b"1", [("h", None)]), (None, None, [])]


def test_the_broker_refuses_a_batch_whose_crc_does_not_match(sandbox, name, target):
    create_topic(sandbox.target, name, partitions=1)
    producer_id, epoch = wire.init_producer_id(target, 15_000)
    data = bytearray(batches.rewrite(make([rec(0)]), producer_id, epoch, 0))
    struct.pack_into(">I", data, 17, 12345)

    assert write(target, TopicPartition(name, 0), bytes(data)) is CorruptRecordError


def group_member(sandbox, group: str, topic: str):
    """A member of a group whose coordinator is ready: its first JoinGroup gets an answer."""
    warmer = KafkaConsumer(bootstrap_servers=sandbox.source, group_id=group, enable_auto_commit=False)
    warmer.assign([TopicPartition(topic, 0)])
    warmer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)}, timeout_ms=30_000)
    warmer.close()
    config = parse_config(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": group, "sessionTimeoutMs": 6000,
                                          "heartbeatIntervalMs": 1000}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": topic}]}}))
    consumer = source_consumer(config, "sourceToTarget", "member-0")
    consumer.partitions_for_topic(topic)  # as a Flow does: the leader assigns what it knows
    return consumer


def join_while_nobody_polls(consumer) -> None:
    """Start a join with a short poll, then let the broker answer it before polling again."""
    deadline = time.monotonic() + 30
    while consumer.group_metadata().state is not MemberState.REBALANCING:
        assert time.monotonic() < deadline, "the join never started"
        consumer.poll(timeout_ms=1)
    time.sleep(2)


def poll_until(consumer, predicate, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"still {consumer.group_metadata().state} after {seconds}s"
        consumer.poll(timeout_ms=100)


def test_a_join_that_finishes_between_polls_is_taken_not_sent_again(sandbox, name):
    """kafka-python would send a second JoinGroup and drop the first one's assignment: for a
    group leader that is one more rebalance of the whole group each time."""
    create_topic(sandbox.source, name, partitions=2)
    consumer = group_member(sandbox, name, name)
    assigned_in: list[int] = []  # the generation of each assignment, as it arrives

    class Recorder(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            assigned_in.append(consumer.group_metadata().generation_id)

    try:
        consumer.subscribe([name], listener=Recorder())
        join_while_nobody_polls(consumer)

        poll_until(consumer, lambda: assigned_in)

        assert assigned_in[0] == 1  # the first join's answer, not a second join's
    finally:
        consumer.close(autocommit=False)


def test_a_rejoin_for_new_partitions_completes_when_it_finishes_between_polls(sandbox, name):
    """The leader rejoins because the topic grew, and its own assignment settles that reason:
    kafka-python would then never take the join's answer and stay rebalancing for good."""
    create_topic(sandbox.source, name, partitions=2)
    consumer = group_member(sandbox, name, name)
    admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
    try:
        consumer.subscribe([name])
        poll_until(consumer, consumer.assignment)
        admin.create_partitions({name: NewPartitions(4)})
        consumer.topics()  # the leader learns of the new partitions now
        join_while_nobody_polls(consumer)

        poll_until(consumer, lambda: len(consumer.assignment()) == 4)

        assert consumer.group_metadata().state is MemberState.STABLE
    finally:
        admin.close()
        consumer.close(autocommit=False)
