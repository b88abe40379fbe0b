"""Batches as the real broker takes them: every header rewrite accepted, a wrong CRC refused."""

from __future__ import annotations

import struct
import time

import pytest
from kafka.errors import CorruptRecordError
from kafka.structs import TopicPartition

from batch_support import make, rec
from kafka_support import create_topic, read_all
from replicator import batches, wire

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
