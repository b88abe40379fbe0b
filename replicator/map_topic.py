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
from kafka.errors import TopicAlreadyExistsError

from . import batches
from .offset_map import Entry, Partition, PartitionMap, Span
from .topics import topic_configs

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-offsets"
PARTITION = TopicPartition(TOPIC, 0)
READ_TIMEOUT_SECONDS = 30.0
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000  # Kafka's log.retention.hours


def ensure_topic(admin: KafkaAdminClient, retention_ms: int) -> None:
    """Create the map topic (one partition) if it is missing; `retention_ms` is the
    longest retention of the topics it maps (-1: forever)."""
    if TOPIC in set(admin.list_topics()):
        return
    brokers = len(admin.describe_cluster()["brokers"])
    configs = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
    try:
        admin.create_topics({TOPIC: {"num_partitions": 1, "replication_factor": min(3, brokers),
                                     "configs": configs}}, wait_for_metadata=True)
        log.info("created the offset map topic %r (retention.ms %s)", TOPIC, retention_ms)
    except TopicAlreadyExistsError:
        pass


def longest_retention(admin: KafkaAdminClient, topics) -> int:
    """The longest `retention.ms` among `topics` (-1 if any keeps records forever)."""
    longest = 0
    for topic in topics:
        retention = int(topic_configs(admin, topic).get("retention.ms", DEFAULT_RETENTION_MS))
        if retention < 0:
            return -1
        longest = max(longest, retention)
    return longest


def encode(entries: list[Entry]) -> bytes:
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
    consumer = KafkaConsumer(**settings, enable_auto_commit=False, group_id=None)
    try:
        if TOPIC not in consumer.topics():
            raise MapMissing(TOPIC)
        consumer.assign([PARTITION])
        consumer.seek_to_beginning(PARTITION)
        end = consumer.end_offsets([PARTITION])[PARTITION]
        latest: dict = {}
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while consumer.position(PARTITION) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the offset map {TOPIC!r} to its end "
                                   f"within {READ_TIMEOUT_SECONDS:.0f}s")
            for records in consumer.poll(timeout_ms=200, max_records=100_000).values():
                for record in records:
                    entry = Entry.decode(record.key, record.value)
                    if entry is not None and entry.key.source_cluster == source_cluster:
                        latest[entry.key] = entry.count
    finally:
        consumer.close()
    maps: dict[tuple[Partition, Partition], PartitionMap] = {}
    for key, count in latest.items():
        if count > 0:
            maps.setdefault((key.source, key.target), PartitionMap()).spans.append(
                Span(key.source_offset, key.target_offset, count))
    return maps
