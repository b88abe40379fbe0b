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

from kafka import KafkaAdminClient, KafkaProducer

from . import own_topics
from .acls import Binding

log = logging.getLogger(__name__)

TOPIC = "kafka-replicator-acls"
WRITE_TIMEOUT_SECONDS = 30.0


def ensure_topic(admin: KafkaAdminClient) -> None:
    """Create the ledger topic (compacted, one partition) if it is missing."""
    own_topics.ensure(admin, TOPIC, {"cleanup.policy": "compact"}, "the ACL ledger topic")


class Ledger:
    """One cluster's ledger, read to its end at each look; written as `owner`."""

    def __init__(self, settings: dict, owner: str):
        self._settings = settings
        self._owner = owner
        self._entries: dict[bytes, tuple[str, Binding]] = {}  # record key → (owner, binding)
        self._tail = own_topics.Tail(settings, TOPIC, "the ACL ledger")
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
        self._tail.close()
        if self._producer is not None:
            self._producer.close()

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
            future.get(timeout=WRITE_TIMEOUT_SECONDS)

    def _read_to_end(self) -> None:
        for record in self._tail.read():
            if record.value is None:
                self._entries.pop(record.key, None)
            else:
                entry = json.loads(record.value)
                owner = entry.pop("owner")
                entry.pop("createdAt", None)
                self._entries[record.key] = (owner, Binding(**entry))
