"""A consumer group's source positions, translated through the offset map to the target.

Per partition: the group's committed source offset, the exact target offset where it
resumes after a failover, and how much the replicator has still to copy; or why it
cannot be said. `offsets translate` prints it, the group offset sync writes it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError

from . import link, map_topic
from .config import ReplicatorConfig
from .errors import ProblemFound
from .offset_map import Partition, PartitionMap
from .selection import Selection
from .tables import dash, table

COORDINATOR_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class GroupPosition:
    group: str
    topic: str
    partition: int
    committed: int
    target_topic: str | None
    target_offset: int | None
    to_copy: int | None  # records the replicator has still to copy in this partition
    reason: str | None = None

    def as_json(self) -> dict:
        return asdict(self)


class Translator:
    """Reads what translating needs from both clusters of one direction; closes its clients."""

    def __init__(self, config: ReplicatorConfig, direction: str):
        self.config = config
        self.direction = direction
        self._hashed = config.direction(direction).partitioning == "hash"
        (self._source_side, self._source), (self._target_side, self._target) = config.clusters(direction)
        self.source_admin: KafkaAdminClient = link.admin_client(self._source_side, self._source)
        selection = Selection.of(config.direction(direction))
        try:
            with link.reaching(self._source_side, self._source):
                existing = self.source_admin.list_topics() if selection.by_pattern else []
        except BaseException:
            self.source_admin.close()
            raise
        self.routes = selection.routes(existing)
        self._consumer: KafkaConsumer | None = None

    def close(self) -> None:
        self.source_admin.close()
        if self._consumer is not None:
            self._consumer.close()

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed source offsets (empty if it has none)."""
        with link.reaching(self._source_side, self._source):
            offsets = coordinated(self.source_admin.list_group_offsets, {group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    def translate(self, group: str, committed: dict[TopicPartition, int] | None = None,
                  maps: dict | None = None) -> list[GroupPosition]:
        """Every partition `group` committed on the source, translated to the target."""
        committed = self.committed(group) if committed is None else committed
        replicated = self.replicated(group, committed)
        maps = self.maps() if maps is None else maps
        replicator = self.committed(self.config.group(self.direction).group_id)
        starts, ends = self._log_bounds(replicated)
        rows = []
        for tp, offset in sorted(committed.items()):
            target_topic = self.routes.get(tp.topic)
            if target_topic is None:
                rows.append(GroupPosition(group, tp.topic, tp.partition, offset, None, None, None,
                                          f"topic not replicated by {self.direction}"))
                continue
            copied_to = replicator.get(tp)
            to_copy = None if copied_to is None else max(0, ends[tp] - copied_to)
            if self._hashed:
                reason = ("partitioning: hash spreads a source partition over the target's "
                          "partitions, so no single target offset matches")
            elif copied_to is None:
                reason = "the replicator has not committed anything in this partition yet"
            else:
                spans = maps.get((Partition(tp.topic, tp.partition),
                                  Partition(target_topic, tp.partition)), PartitionMap())
                translation = spans.trimmed(starts[tp]).translate(offset, copied_to)
                rows.append(GroupPosition(group, tp.topic, tp.partition, offset, target_topic,
                                          translation.target, to_copy, translation.reason))
                continue
            rows.append(GroupPosition(group, tp.topic, tp.partition, offset, target_topic, None,
                                      to_copy, reason))
        return rows

    def replicated(self, group: str, committed: dict[TopicPartition, int]) -> list[TopicPartition]:
        """The partitions of `committed` that this direction copies; a ProblemFound if none."""
        if not committed:
            raise ProblemFound(f"{self._source_side} cluster ({self._source.bootstrap_servers}): "
                               f"consumer group {group!r} has no committed offsets there; "
                               "check the group's name (kafka-consumer-groups.sh --list)")
        replicated = [tp for tp in committed if tp.topic in self.routes]
        if not replicated:
            raise ProblemFound(f"{self._source_side} cluster ({self._source.bootstrap_servers}): "
                               f"consumer group {group!r} commits no topic that "
                               f"{self.direction} replicates (it commits "
                               f"{', '.join(sorted({tp.topic for tp in committed}))})")
        return replicated

    def maps(self) -> dict:
        """The offset map of everything this direction copied, from the target cluster."""
        source_cluster = link.cluster_id(self.source_admin, self._source_side, self._source)
        with link.reaching(self._target_side, self._target):
            try:
                return map_topic.read(link.client_settings(self._target), source_cluster)
            except map_topic.MapMissing:
                raise ProblemFound(
                    f"{self._target_side} cluster ({self._target.bootstrap_servers}): "
                    f"the offset map topic {map_topic.TOPIC!r} does not exist; the replicator "
                    "has not run against this cluster yet, or the topic was deleted (offsets "
                    "copied before it was recreated cannot be translated)") from None

    def _log_bounds(self, partitions) -> tuple[dict, dict]:
        if self._consumer is None:
            self._consumer = KafkaConsumer(**link.client_settings(self._source), enable_auto_commit=False)
        with link.reaching(self._source_side, self._source):
            return self._consumer.beginning_offsets(partitions), self._consumer.end_offsets(partitions)


def format_table(rows: list[GroupPosition]) -> str:
    return table(("GROUP", "TOPIC", "PARTITION", "SOURCE-OFFSET", "TARGET-TOPIC", "TARGET-OFFSET",
                  "TO-COPY", "NOTE"),
                 [(r.group, r.topic, str(r.partition), str(r.committed), r.target_topic or "-",
                   dash(r.target_offset), dash(r.to_copy), r.reason or "") for r in rows])


def coordinated(call, *args):
    """A group call, repeated while the cluster creates, loads or moves the group's coordinator."""
    deadline = time.monotonic() + COORDINATOR_WAIT_SECONDS
    while True:
        try:
            return call(*args)
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
