"""The replicator's own topics on each cluster (its producer registry, offset map, ACL ledger):
one partition each, created when missing, and read to their end by a Tail."""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 30.0


def ensure(admin, topic: str, configs: dict[str, str], what: str) -> None:
    """Create the topic (one partition, up to three replicas) if it is missing; `what` names
    it in the log line."""
    if topic in set(admin.list_topics()):
        return
    brokers = len(admin.describe_cluster()["brokers"])
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": min(3, brokers),
                                     "configs": configs}}, wait_for_metadata=True)
        log.info("created %s %r with configs %s", what, topic, configs)
    except TopicAlreadyExistsError:
        pass


class Tail:
    """Reads a one-partition topic from its start, then on from where the last read stopped."""

    def __init__(self, settings: dict, topic: str, what: str):
        self._settings = settings
        self._partition = TopicPartition(topic, 0)
        self._what = what
        self._consumer: KafkaConsumer | None = None

    def read(self) -> list:
        """The records written since the last read, up to the end the topic has now."""
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = KafkaConsumer(**self._settings, enable_auto_commit=False,
                                                      group_id=None)
            consumer.assign([self._partition])
            consumer.seek(self._partition, 0)
        end = consumer.end_offsets([self._partition])[self._partition]
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        read = []
        while consumer.position(self._partition) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self._what} {self._partition.topic!r} to its end")
            for records in consumer.poll(timeout_ms=200).values():
                read.extend(records)
        return read

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
