"""Helpers for tests against the real sandbox brokers."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NoError,
    NotCoordinatorError,
)
from kafka.structs import OffsetAndMetadata

from replicator import batches, wire
from replicator.config import parse_config
from replicator.flow import Flow
from replicator.provenance import user_headers


def create_topic(bootstrap: str, topic: str, partitions: int = 3, configs: dict | None = None):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "configs": configs or {}}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, records, **producer_settings) -> None:
    """Produce (partition, key, value, headers, timestamp_ms) tuples and wait for all acks."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **producer_settings)
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers or [],
                          partition=partition, timestamp_ms=timestamp)
            for partition, key, value, headers, timestamp in records
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def produce_batch(bootstrap: str, topic: str, partition: int, records) -> None:
    """Write one batch of `replicator.batches.Record`s as it is: it may hold what
    kafka-python's producer refuses (key and value both null, a header without a value)."""
    link = wire.Wire({"bootstrap_servers": [bootstrap]}, 1 << 20)
    try:
        link.bootstrap(15_000)
        link.track([topic])
        tp = TopicPartition(topic, partition)
        wait_until(lambda: link.leader(tp) is not None, 30, what=f"a leader for {topic}")
        future = link.send(link.leader(tp), wire.produce_request({tp: batches.stamp(batches.encode(records), -1, -1, -1)}, 10_000))
        wait_until(lambda: future.is_done, 30, interval=0.01, what="the produce answer")
        assert future.exception is None and wire.produced(future.value)[tp][0] is None
    finally:
        link.close()


def batch_bytes(bootstrap: str, topic: str, partitions: int) -> int:
    """The bytes of every record batch in a topic, as stored: what a replicator wrote there."""
    link = wire.Wire({"bootstrap_servers": [bootstrap]}, 64 << 20)
    total = 0
    try:
        link.bootstrap(15_000)
        link.track([topic])
        for partition in range(partitions):
            tp = TopicPartition(topic, partition)
            wait_until(lambda: link.leader(tp) is not None, 30, what=f"a leader for {topic}")
            offset = 0
            while True:
                request = wire.fetch_request({tp: offset}, 8 << 20, 8 << 20, max_wait_ms=0)
                future = link.send(link.leader(tp), request)
                wait_until(lambda: future.is_done, 30, interval=0.01, what="the fetch answer")
                found = batches.split(wire.fetched(future.value)[0].records)
                if not found:
                    break
                total += sum(batch.size for batch in found)
                offset = found[-1].next_offset
    finally:
        link.close()
    return total


def read_all(bootstrap: str, topic: str) -> dict[int, list]:
    """Every committed record of a topic, per partition, in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False)
    try:
        known = consumer.partitions_for_topic(topic)
        # A topic just created can be missing from the first answers (seen in full runs): kafka-python
        # may hand back the answer to a request sent before it asked for all topics. So, a few tries.
        unknown_until = time.monotonic() + 3
        while not known and time.monotonic() < unknown_until:
            time.sleep(0.2)
            consumer.topics()  # asks the cluster again
            known = consumer.partitions_for_topic(topic)
        partitions = [TopicPartition(topic, p) for p in known or ()]
        if not partitions:
            return {}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: dict[int, list] = defaultdict(list)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                found[tp.partition].extend(batch)
        return dict(found)
    finally:
        consumer.close()


def essence(record) -> tuple:
    """What must arrive intact: key, value, user headers and timestamp."""
    return (record.key, record.value, user_headers(record.headers), record.timestamp)


def count(bootstrap: str, topic: str) -> int:
    return sum(len(batch) for batch in read_all(bootstrap, topic).values())


def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets; none while its coordinator is still being set up."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items()}
    except (CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError):
        return {}
    finally:
        admin.close()


def set_group_offsets(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets for a group with no members, as an application that read that far."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        def committed_them():
            try:
                errors = admin.alter_group_offsets(
                    group, {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            except (CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError):
                return False
            refused = {tp: error for tp, error in errors.items() if error is not NoError}
            assert all(error.retriable for error in refused.values()), refused
            return not refused

        wait_until(committed_them, 30, what=f"a coordinator for group {group}")
    finally:
        admin.close()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def running(flow: Flow):
    """Run a flow in a thread; stop it on exit and re-raise whatever it raised."""
    failure: list[BaseException] = []

    def target():
        try:
            flow.run()
        except BaseException as exc:  # surfaced in the test's thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"flow-{flow.direction}", daemon=True)
    thread.start()
    try:
        yield flow
    finally:
        flow.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the flow did not stop within 60s"
    if failure:
        raise failure[0]


def flow_for(sandbox, direction: str = "sourceToTarget", member: str | None = None,
             **config) -> Flow:
    return Flow(parse_config(sandbox.config(**config)), direction, member)
