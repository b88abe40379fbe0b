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

from kafka import KafkaAdminClient, KafkaProducer

from . import own_topics
from .batches import NO_PRODUCER

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-producers"
WRITE_TIMEOUT_SECONDS = 30.0


def ensure_topic(admin: KafkaAdminClient) -> None:
    """Create the registry topic (compacted, one partition) if it is missing."""
    own_topics.ensure(admin, TOPIC, {"cleanup.policy": "compact"}, "the producer-id registry topic")


def register(settings: dict, producer_ids: list[int], direction: str, member: str | None) -> None:
    """Record that `producer_ids` write for us on this cluster; returns once acknowledged."""
    producer = KafkaProducer(**settings, acks="all")
    try:
        entry = json.dumps({"direction": direction, "member": member, "host": socket.gethostname(),
                            "registeredAt": int(time.time() * 1000)}).encode()
        sent = [producer.send(TOPIC, key=str(producer_id).encode(), value=entry, partition=0)
                for producer_id in producer_ids]
        for future in sent:
            future.get(timeout=WRITE_TIMEOUT_SECONDS)
    finally:
        producer.close()


class Registry:
    """The registered producer ids of one cluster, as its readers see them."""

    def __init__(self, settings: dict):
        self._settings = settings
        self._ours: set[int] = set()
        self._foreign: set[int] = set()
        self._tail = own_topics.Tail(settings, TOPIC, "the producer-id registry")

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
        self._ours.update(int(record.key) for record in self._tail.read())

    def close(self) -> None:
        self._tail.close()
