"""The ACLs a replicator created on a cluster: a compacted topic on that cluster.

ACL sync removes an ACL only if the ledger says a replicator created it there, so an ACL made
by hand is never touched. An entry is written before its ACL is created and its tombstone
after the ACL is deleted: a crash between the two leaves an entry without an ACL (which the
next pass creates again, or drops), never an ACL nobody owns, which, were it an ALLOW, would
outlive the source's. Each entry names its owner (a direction's consumer group), so that
replicators sharing a cluster remove only their own, and never one another still holds.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from .acls import Binding

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-acls"
_PARTITION = TopicPartition(TOPIC, 0)
READ_TIMEOUT_SECONDS = 30.0


def ensure_topic(admin: KafkaAdminClient) -> None:
    """Create the ledger topic (compacted, one partition) if it is missing."""
    if TOPIC in set(admin.list_topics()):
        return
    brokers = len(admin.describe_cluster()["brokers"])
    try:
        admin.create_topics({TOPIC: {"num_partitions": 1, "replication_factor": min(3, brokers),
                                     "configs": {"cleanup.policy": "compact"}}},
                            wait_for_metadata=True)
        log.info("created the ACL ledger topic %r", TOPIC)
    except TopicAlreadyExistsError:
        pass


class Ledger:
    """One cluster's ledger, read to its end at each look; written as `owner`."""

    def __init__(self, settings: dict, owner: str):
        self._settings = settings
        self._owner = owner
        self._entries: dict[bytes, tuple[str, Binding]] = {}  # record key → (owner, binding)
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None

    def holders(self) -> dict[Binding, set[str]]:
        """Each binding the ledger holds, with the owners that created it."""
        self._read_to_end()
        found: dict[Binding, set[str]] = defaultdict(set)
        for owner, binding in self._entries.values():
            found[binding].add(owner)
        return found

    def claim(self, bindings: list[Binding]) -> None:
        """Record that we create these; returns once the cluster has the entries."""
        self._write({self._key(binding): json.dumps({"owner": self._owner, **asdict(binding),
                                                     "createdAt": int(time.time() * 1000)}).encode()
                     for binding in bindings})

    def release(self, bindings: list[Binding]) -> None:
        """Forget these: their ACLs are gone, or were never ours to remove."""
        self._write({self._key(binding): None for binding in bindings})

    def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                client.close()

    def _key(self, binding: Binding) -> bytes:
        return json.dumps([self._owner, *asdict(binding).values()]).encode()

    def _write(self, records: dict[bytes, bytes | None]) -> None:
        if not records:
            return
        if self._producer is None:
            self._producer = KafkaProducer(**self._settings, acks="all")
        sent = [self._producer.send(TOPIC, key=key, value=value, partition=0)
                for key, value in records.items()]
        for future in sent:
            future.get(timeout=READ_TIMEOUT_SECONDS)

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
                raise TimeoutError(f"could not read the ACL ledger {TOPIC!r} to its end")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.value is None:
                        self._entries.pop(record.key, None)
                    else:
                        entry = json.loads(record.value)
                        owner = entry.pop("owner")
                        entry.pop("createdAt", None)
                        self._entries[record.key] = (owner, Binding(**entry))
