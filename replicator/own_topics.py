"""The replicator's own topics on each cluster (its producer registry, offset map, ACL ledger):
one partition each, created when missing, and read to their end by a Tail."""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 30.0
# A KRaft controller busy creating thousands of partitions elsewhere takes more than
# kafka-python's 10 s to give a new topic its leader.
READY_TIMEOUT_SECONDS = 60.0


class NotReady(TimeoutError):
    """One of our topics exists but has no leader yet: the brokers answer, the topic waits."""


def ensure(admin, topic: str, configs: dict[str, str], what: str) -> None:
    """Create the topic (one partition, up to three replicas) if it is missing, and wait
    until it has a leader; `what` names it in the log line and the error."""
    if topic in set(admin.list_topics()):
        return
    brokers = len(admin.describe_cluster()["brokers"])
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": min(3, brokers),
                                     "configs": configs}})
        log.info("created %s %r with configs %s", what, topic, configs)
    except TopicAlreadyExistsError:
        pass  # another member's, just created: it may have no leader yet either
    try:
        admin.wait_for_topics([topic], timeout_ms=READY_TIMEOUT_SECONDS * 1000)
    except KafkaTimeoutError as exc:
        raise NotReady(f"{what} {topic!r} has no leader {READY_TIMEOUT_SECONDS:.0f} s after it was "
                       f"created ({exc}); the brokers answer, but their controller is slow, e.g. busy "
                       "creating many partitions at once") from None


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
