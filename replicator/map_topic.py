"""The offset map's home: a compacted topic on the cluster a direction writes to.

A flow writes its journal's entries there after the target acknowledged the copies
and before it commits the source offsets they cover, so every committed position of
the replicator's group has its mapping. `cleanup.policy=compact,delete` keeps the
latest length of each span, and forgets spans untouched for longer than the source
topics keep their records (a span is rewritten whenever it grows, so it outlives
the records it maps).
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from . import batches, own_topics
from .offset_map import Entry, Journal, Partition, PartitionMap, Position, Span
from .producer import Delivery, Shipment
from .topics import topic_configs

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-offsets"
PARTITION = TopicPartition(TOPIC, 0)
READ_TIMEOUT_SECONDS = 30.0
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000  # Kafka's log.retention.hours
SEGMENT_MS = 60_000


def ensure_topic(admin: KafkaAdminClient, retention_ms: int) -> None:
    """Create the map topic (one partition) if it is missing; `retention_ms` is the
    longest retention of the topics it maps (-1: forever)."""
    # Short segments: only closed segments are compacted, and an exactly-once member reads
    # the whole topic when it is given partitions, while each transaction adds a Position.
    own_topics.ensure(admin, TOPIC, {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms),
                                    "segment.ms": str(SEGMENT_MS), "min.cleanable.dirty.ratio": "0.1"},
                     "the offset map topic")


def longest_retention(admin: KafkaAdminClient, topics) -> int:
    """The longest `retention.ms` among `topics` (-1 if any keeps records forever)."""
    longest = 0
    for topic in topics:
        retention = int(topic_configs(admin, topic).get("retention.ms", DEFAULT_RETENTION_MS))
        if retention < 0:
            return -1
        longest = max(longest, retention)
    return longest


def encode(entries: list[Entry | Position]) -> bytes:
    """A batch of map records, ready for the batch producer to stamp."""
    now = int(time.time() * 1000)
    records = []
    for entry in entries:
        key, value = entry.encode()
        records.append(batches.Record(0, now, key, value, []))
    return batches.encode(records)


class MapMissing(LookupError):
    """The cluster has no offset map topic."""


def read(settings: dict, source_cluster: str) -> dict[tuple[Partition, Partition], PartitionMap]:
    """Every span copied from `source_cluster`, per (source partition, target partition)."""
    latest: dict = {}
    for record in _records(settings, to_high_watermark=False, timeout=READ_TIMEOUT_SECONDS):
        entry = Entry.decode(record.key, record.value)
        if entry is not None and entry.key.source_cluster == source_cluster:
            latest[entry.key] = entry.count
    maps: dict[tuple[Partition, Partition], PartitionMap] = {}
    for key, count in latest.items():
        if count > 0:
            maps.setdefault((key.source, key.target), PartitionMap()).spans.append(
                Span(key.source_offset, key.target_offset, count))
    return maps


def positions(settings: dict, group: str, source_cluster: str, partitions) -> dict:
    """Exactly-once: the committed Position of each of `partitions` (those that have one).

    Read to the high watermark as it was when called, not just to the last stable offset:
    a later transaction still open elsewhere must not hide a position committed before it.
    """
    wanted = {Partition(tp.topic, tp.partition): tp for tp in partitions}
    found: dict = {}
    try:
        for record in _records(settings, to_high_watermark=True, timeout=POSITIONS_TIMEOUT_SECONDS):
            position = Position.decode(record.key, record.value)
            if (position is not None and position.group == group
                    and position.source_cluster == source_cluster and position.source in wanted):
                found[wanted[position.source]] = position.offset
    except MapMissing:
        pass
    return found


def _records(settings: dict, to_high_watermark: bool, timeout: float):
    """The map topic's committed records, in order, to its last stable offset or to its high
    watermark as it was when read began; MapMissing if the cluster has none."""
    # read_committed: an aborted exactly-once transaction's records map copies nobody sees.
    consumer = KafkaConsumer(**settings, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed")
    try:
        if TOPIC not in consumer.topics():
            raise MapMissing(TOPIC)
        consumer.assign([PARTITION])
        consumer.seek_to_beginning(PARTITION)
        end = None if to_high_watermark else consumer.end_offsets([PARTITION])[PARTITION]
        deadline = time.monotonic() + timeout
        while end is None or consumer.position(PARTITION) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the offset map {TOPIC!r} to offset {end} within "
                                   f"{timeout:.0f}s (a transaction left open?)")
            for records in consumer.poll(timeout_ms=200, max_records=100_000).values():
                yield from records
            if end is None:
                end = consumer.highwater(PARTITION)  # known once a fetch has been answered
    finally:
        consumer.close()


# Longer than a transaction's timeout: one left open by a member that died is aborted by then.
POSITIONS_TIMEOUT_SECONDS = 90.0
ENTRIES_PER_BATCH = 2000  # about 250 KB: well inside any request size limit
SLOW_WRITE_SECONDS = 60.0


class MapWriteRefused(Exception):
    """The target refused a write of the offset map for good."""

    def __init__(self, error: BaseException):
        self.error = error
        super().__init__(type(error).__name__)


class MapWriter:
    """A flow's offset map on its way to the map topic; commits wait for it.

    1. Each acknowledged shipment's spans go to the journal (`written`).
    2. A commit starts a map write of the journal and captures the acknowledged positions
       it covers (`start`).
    3. Those positions are handed out for commit once the write is acknowledged (`ready`);
       a refused write raises then, and for good: its spans are no longer in the journal.
    """

    def __init__(self, journal: Journal, submit, slow=lambda seconds: None, clock=time.monotonic):
        self.journal = journal
        self._submit = submit  # BatchProducer.submit
        self._slow = slow  # called with the seconds a write has been pending, once a minute
        self._clock = clock
        self._write = None  # (positions, Delivery or None, started)
        self._warned = 0.0
        self._refused: MapWriteRefused | None = None

    def written(self, shipment) -> None:
        target = shipment.offset
        for first, count in shipment.runs:
            self.journal.record(shipment.origin, shipment.tp, first, target, count)
            if target >= 0:
                target += count

    def start(self, positions: dict) -> None:
        entries = self.journal.take()
        delivery = None
        if entries:
            chunks = [entries[i:i + ENTRIES_PER_BATCH] for i in range(0, len(entries), ENTRIES_PER_BATCH)]
            delivery = Delivery(len(chunks), None)
            for chunk in chunks:
                self._submit(Shipment(PARTITION, len(chunk), delivery, data=encode(chunk)))
        self._write = (positions, delivery, self._clock())

    @property
    def writing(self) -> bool:
        return self._write is not None

    def done(self) -> bool:
        """Whether the write under way (if any) has its answer."""
        return self._write is None or self._write[1] is None or self._write[1].is_done

    def ready(self) -> dict | None:
        """The positions of the finished write (None while it is under way, {} without one)."""
        if self._refused is not None:
            raise self._refused
        if self._write is None:
            return {}
        positions, delivery, started = self._write
        if delivery is not None and not delivery.is_done:
            waited = self._clock() - started
            if waited - self._warned >= SLOW_WRITE_SECONDS:
                self._warned = waited
                self._slow(waited)
            return None
        self._write, self._warned = None, 0.0
        if delivery is not None and delivery.exception is not None:
            self._refused = MapWriteRefused(delivery.exception)
            raise self._refused
        return positions

    def forget(self, partitions) -> None:
        """Partitions gone to another member: their next owner commits them."""
        self.journal.forget(partitions)
        if self._write is not None:
            for tp in partitions:
                self._write[0].pop(tp, None)
