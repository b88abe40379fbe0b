"""replicator.backlog: a direction's backlog in records and seconds, against the sandbox's
brokers, and the reading of one fetched record set (pure)."""

from __future__ import annotations

import struct
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from kafka_support import committed, count, create_topic, flow_for, produce, running, wait_until
from replicator import batches
from replicator.backlog import Backlog, Peeked, peek
from replicator.batches import Record
from replicator.config import parse_config


def config_for(sandbox, name: str, **group):
    return parse_config(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200, **group}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}}))


def copy_everything(sandbox, name: str, records: int) -> None:
    """Run a member until the group committed the end of every partition, then stop it."""
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    with running(flow):
        wait_until(lambda: count(sandbox.target, name) == records, 60, what="the copies")
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == records, 30, what="the commits")


@pytest.mark.kafka
def test_lag_in_seconds_is_the_age_of_the_oldest_uncopied_record_and_falls_to_zero(sandbox, name):
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(p, b"k", b"v", [], None) for p in (0, 1)])
    copy_everything(sandbox, name, 2)
    config = config_for(sandbox, name)
    backlog = Backlog(config, "sourceToTarget")
    try:
        caught_up = backlog.measure()
        assert [(p.partition, p.records, p.seconds) for p in caught_up.partitions] == [(0, 0, 0.0), (1, 0, 0.0)]
        waiting_since = int(time.time() * 1000) - 30_000  # a record written 30 s ago
        produce(sandbox.source, name, [(0, b"k", b"old", [], waiting_since), (0, b"k", b"new", [], None)])
        behind = {p.partition: p for p in backlog.measure().partitions}
        assert behind[0].records == 2 and 30 <= behind[0].seconds < 40
        assert behind[1].records == 0 and behind[1].seconds == 0.0
        time.sleep(1.5)
        assert backlog.measure().partitions[0].seconds >= behind[0].seconds + 1  # it keeps ageing
        copy_everything(sandbox, name, 4)
        after = backlog.measure()
        assert [(p.records, p.seconds) for p in after.partitions] == [(0, 0.0), (0, 0.0)]
    finally:
        backlog.close()


@pytest.mark.kafka
def test_a_partition_no_member_owns_shows_its_backlog_and_counts_as_ownerless(sandbox, name):
    create_topic(sandbox.source, name, partitions=3)
    produce(sandbox.source, name, [(p, b"k", b"v", [], None) for p in (0, 1, 2)])
    copy_everything(sandbox, name, 3)
    produce(sandbox.source, name, [(1, b"k", b"v%d" % i, [], None) for i in range(500)])
    backlog = Backlog(config_for(sandbox, name), "sourceToTarget")
    try:
        figures = backlog.measure()
    finally:
        backlog.close()
    assert figures.ownerless == 3
    assert [(p.partition, p.records, p.owner) for p in figures.partitions] == [(0, 0, None), (1, 500, None), (2, 0, None)]
    assert 0 <= figures.partitions[1].seconds < 30


@pytest.mark.kafka
def test_a_partition_owned_by_a_running_member_is_not_ownerless(sandbox, name):
    create_topic(sandbox.source, name, partitions=2)
    flow = flow_for(sandbox, member="sourceToTarget-0",
                    consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    backlog = Backlog(config_for(sandbox, name), "sourceToTarget")
    try:
        with running(flow):
            wait_until(lambda: len(flow.health().assigned) == 2, 60, what="the assignment")
            figures = wait_until(lambda: (f := backlog.measure()).ownerless == 0 and f, 30,
                                 what="the owners in the group's description")
    finally:
        backlog.close()
    assert {p.owner for p in figures.partitions} == {"sourceToTarget-0"}


@pytest.mark.kafka
def test_a_commit_at_a_transaction_marker_dates_the_backlog_by_the_next_record(sandbox, name):
    create_topic(sandbox.source, name, partitions=1)
    producer = KafkaProducer(bootstrap_servers=sandbox.source, transactional_id=name)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(name, b"v%d" % i, partition=0)
        producer.commit_transaction()  # offsets 0-2, then the marker at 3
    finally:
        producer.close()
    tp = TopicPartition(name, 0)
    group = KafkaConsumer(bootstrap_servers=sandbox.source, group_id=name, enable_auto_commit=False)
    try:
        group.commit({tp: OffsetAndMetadata(3, "", -1)})
    finally:
        group.close()
    waiting_since = int(time.time() * 1000) - 60_000
    produce(sandbox.source, name, [(0, b"k", b"v", [], waiting_since)])  # offset 4
    backlog = Backlog(config_for(sandbox, name), "sourceToTarget")
    try:
        (partition,) = backlog.measure().partitions
    finally:
        backlog.close()
    assert partition.committed == 3 and partition.records == 2
    assert 60 <= partition.seconds < 70


# What one fetched record set says (pure) ---------------------------------------------------

def batch_at(base_offset: int, timestamps: list[int], codec: str = "none", attributes: int = 0,
             producer_id: int = -1) -> bytes:
    """A batch of records at `base_offset`, written at these times."""
    data = bytearray(batches.encode([Record(i, ts, b"k", b"v" * 100, []) for i, ts in enumerate(timestamps)], codec))
    struct.pack_into(">q", data, 0, base_offset)
    struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | attributes)
    struct.pack_into(">q", data, 43, producer_id)
    return bytes(data)


def test_peek_reads_the_record_at_the_offset_inside_a_batch():
    assert peek(batch_at(10, [1000, 2000, 3000]), [], 11) == Peeked(timestamp=2000)


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd"])
def test_peek_reads_compressed_batches(codec):
    assert peek(batch_at(10, [1000, 2000, 3000], codec), [], 12) == Peeked(timestamp=3000)


def test_peek_takes_the_first_record_after_a_compacted_gap():
    assert peek(batch_at(0, [5]) + batch_at(7, [4000, 5000]), [], 3) == Peeked(timestamp=4000)


def test_peek_skips_markers_and_aborted_records_and_says_where_to_ask_next():
    aborted = batch_at(0, [100, 200], attributes=batches.TRANSACTIONAL, producer_id=7)
    # An abort marker: a control record whose key is version 0, type 0 (ABORT).
    marker = bytearray(batches.encode([Record(0, 300, b"\x00\x00\x00\x00", b"", [])]))
    struct.pack_into(">q", marker, 0, 2)
    struct.pack_into(">h", marker, 21, batches.TRANSACTIONAL | batches.CONTROL)
    struct.pack_into(">q", marker, 43, 7)
    assert peek(aborted + marker, [(7, 0)], 0) == Peeked(next_offset=3)
    assert peek(aborted + marker + batch_at(3, [900]), [(7, 0)], 0) == Peeked(timestamp=900)


def test_peek_dates_a_batch_cut_short_by_what_came():
    whole = batch_at(20, [1000 + i for i in range(200)])
    assert peek(whole[:2000], [], 22) == Peeked(timestamp=1002)  # its records, as far as they came
    compressed = batch_at(20, [1000 + i for i in range(200)], "gzip")
    assert peek(compressed[:70], [], 25) == Peeked(timestamp=1000)  # its header: the first timestamp


def test_peek_of_nothing_says_nothing():
    assert peek(b"", [], 5) == Peeked()
