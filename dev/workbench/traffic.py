"""The demo's sample traffic, and the check that every record arrived where it should.

Each record carries a `demo-run` header with the run's id, so that a check reads only
this run's records, even in a sandbox that earlier runs used.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

RUN_HEADER = "demo-run"
TICK_SECONDS = 0.05


@dataclass(frozen=True)
class Stream:
    """One topic's sample records: produced on `origin`, replicated to `destination`."""

    topic: str
    origin: str  # bootstrap servers
    destination: str
    partitions: int
    share: float  # of the total rate
    sample: Callable[[random.Random], tuple[str, dict]]  # a key and the value's fields


@dataclass(frozen=True)
class PartitionCheck:
    """One partition's records as sent to the origin against those found at the destination."""

    topic: str
    partition: int
    sent: int
    arrived: int
    duplicates: int  # second copies: at-least-once replays after a failure
    missing: int  # sent, never arrived
    out_of_order: int  # arrived after a record that was sent later
    foreign: int  # arrived here, but were not sent to this partition

    @property
    def exact(self) -> bool:
        """Every record arrived, in order, and nothing else did (duplicates aside)."""
        return self.missing == self.out_of_order == self.foreign == 0


def check_partition(topic: str, partition: int, sent: Sequence[Hashable],
                    arrived: Sequence[Hashable]) -> PartitionCheck:
    """Compare two record sequences; records must be distinct within `sent`."""
    position = {record: index for index, record in enumerate(sent)}
    seen: set[int] = set()
    latest = -1
    duplicates = out_of_order = foreign = 0
    for record in arrived:
        index = position.get(record)
        if index is None:
            foreign += 1
        elif index in seen:
            duplicates += 1
        else:
            seen.add(index)
            if index < latest:
                out_of_order += 1
            latest = max(latest, index)
    return PartitionCheck(topic, partition, len(sent), len(arrived), duplicates,
                          len(sent) - len(seen), out_of_order, foreign)


class Traffic:
    """Produces every stream at a bounded total rate, in a thread, and remembers each
    acknowledged record by topic and partition."""

    def __init__(self, streams: list[Stream], rate: float, run_id: str):
        self.streams = streams
        self.rate = rate
        self.run_id = run_id
        self.failed = 0
        self._sent: dict[tuple[str, int], dict[int, tuple]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._producers = {origin: KafkaProducer(bootstrap_servers=origin, acks="all", linger_ms=5)
                           for origin in {stream.origin for stream in streams}}
        self._thread = threading.Thread(target=self._produce, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and wait until every sent record is acknowledged."""
        self._stopping.set()
        self._thread.join()
        for producer in self._producers.values():
            producer.flush()
            producer.close()

    def produced(self, topic: str) -> int:
        with self._lock:
            return sum(len(records) for (t, _), records in self._sent.items() if t == topic)

    def sent(self, topic: str) -> dict[int, list[tuple]]:
        """The acknowledged records of a topic, per partition, in offset order."""
        with self._lock:
            return {partition: [records[offset] for offset in sorted(records)]
                    for (t, partition), records in self._sent.items() if t == topic}

    def _produce(self) -> None:
        chance = random.Random(self.run_id)
        due = [0.0] * len(self.streams)
        seq = [0] * len(self.streams)
        header = [(RUN_HEADER, self.run_id.encode())]
        last = time.monotonic()
        while not self._stopping.wait(TICK_SECONDS):
            now = time.monotonic()
            elapsed, last = now - last, now
            for i, stream in enumerate(self.streams):
                due[i] += self.rate * stream.share * elapsed
                while due[i] >= 1:
                    due[i] -= 1
                    key, fields = stream.sample(chance)
                    value = json.dumps({**fields, "seq": seq[i]}).encode()
                    seq[i] += 1
                    timestamp = int(time.time() * 1000)
                    essence = (key.encode(), value, timestamp)
                    future = self._producers[stream.origin].send(
                        stream.topic, key=essence[0], value=value, headers=header,
                        timestamp_ms=timestamp)
                    future.add_callback(self._acknowledged, essence)
                    future.add_errback(self._failed)

    def _acknowledged(self, essence: tuple, metadata) -> None:
        with self._lock:
            self._sent[(metadata.topic, metadata.partition)][metadata.offset] = essence

    def _failed(self, _error) -> None:
        with self._lock:
            self.failed += 1


def arrived(bootstrap: str, topic: str, run_id: str, keep=lambda record: True,
            committed: bool = True, timeout: float = 120.0) -> dict[int, list[tuple]]:
    """One run's records in a topic (those `keep` accepts), per partition, in offset order, as
    (key, value, timestamp); `committed` False reads aborted records too."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed" if committed else "read_uncommitted",
                             max_partition_fetch_bytes=4 * 1024**2)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: dict[int, list[tuple]] = {tp.partition: [] for tp in partitions}
        deadline = time.monotonic() + timeout
        mark = (RUN_HEADER, run_id.encode())
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} on {bootstrap} to its end in {timeout:.0f}s")
            for tp, batch in consumer.poll(timeout_ms=500, max_records=10_000).items():
                found[tp.partition].extend(
                    (r.key, r.value, r.timestamp) for r in batch
                    if mark in (r.headers or ()) and keep(r))
        return found
    finally:
        consumer.close()


def check_stream(stream: Stream, traffic: Traffic) -> list[PartitionCheck]:
    """Every partition of a stream's topic at its destination against what was sent."""
    found = arrived(stream.destination, stream.topic, traffic.run_id)
    sent = traffic.sent(stream.topic)
    return [check_partition(stream.topic, partition, sent.get(partition, []),
                            found.get(partition, []))
            for partition in sorted(found.keys() | sent.keys())]
