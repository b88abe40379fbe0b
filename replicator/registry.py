"""The producer-id registry: which batches on a cluster were written by a replicator.

A batch copied as bytes cannot carry provenance headers, so its identity is its
producer id. Every producer id the replicator writes with is registered, before its
first write, in a small compacted topic on the cluster it writes to. A reader of that
cluster drops batches whose producer id is registered, so a topic replicated in both
directions never sends a record back where it came from.

A producer id seen for the first time is looked up after reading the registry to its
end; since registration precedes the first write, a batch already fetched is always
explained by what the registry holds by then. Producer ids are unique per cluster
and never reused, so both answers are cached for good.
"""

from __future__ import annotations

import json
import logging
import socket
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from .batches import NO_PRODUCER

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-producers"
_PARTITION = TopicPartition(TOPIC, 0)
READ_TIMEOUT_SECONDS = 30.0


def ensure_topic(admin: KafkaAdminClient) -> None:
    """Create the registry topic (compacted, one partition) if it is missing."""
    if TOPIC in set(admin.list_topics()):
        return
    brokers = len(admin.describe_cluster()["brokers"])
    try:
        admin.create_topics({TOPIC: {"num_partitions": 1, "replication_factor": min(3, brokers),
                                     "configs": {"cleanup.policy": "compact"}}},
                            wait_for_metadata=True)
        log.info("created the producer-id registry topic %r", TOPIC)
    except TopicAlreadyExistsError:
        pass


def register(settings: dict, producer_ids: list[int], direction: str, member: str | None) -> None:
    """Record that `producer_ids` write for us on this cluster; returns once acknowledged."""
    producer = KafkaProducer(**settings, acks="all")
    try:
        entry = json.dumps({"direction": direction, "member": member, "host": socket.gethostname(),
                            "registeredAt": int(time.time() * 1000)}).encode()
        sent = [producer.send(TOPIC, key=str(producer_id).encode(), value=entry, partition=0)
                for producer_id in producer_ids]
        for future in sent:
            future.get(timeout=READ_TIMEOUT_SECONDS)
    finally:
        producer.close()


class Registry:
    """The registered producer ids of one cluster, as its readers see them."""

    def __init__(self, settings: dict):
        self._settings = settings
        self._ours: set[int] = set()
        self._foreign: set[int] = set()
        self._consumer: KafkaConsumer | None = None

    def load(self) -> None:
        """Read the registry now, so that a lookup on the data path costs a round trip or two,
        not a new connection (a few hundred ms that every record behind it would wait)."""
        self._read_to_end()

    def is_ours(self, producer_id: int) -> bool:
        if producer_id == NO_PRODUCER or producer_id in self._foreign:
            return False
        if producer_id in self._ours:
            return True
        self._read_to_end()
        if producer_id in self._ours:
            return True
        self._foreign.add(producer_id)
        return False

    def _read_to_end(self) -> None:
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = KafkaConsumer(**self._settings, enable_auto_commit=False,
                                                      group_id=None)
            consumer.assign([_PARTITION])
            consumer.seek(_PARTITION, 0)
        end = consumer.end_offsets([_PARTITION])[_PARTITION]
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while consumer.position(_PARTITION) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the producer-id registry {TOPIC!r} to its end")
            for records in consumer.poll(timeout_ms=200).values():
                self._ours.update(int(record.key) for record in records)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
