"""Target topics shaped like their sources: created, grown, and their configs copied."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

# Configs that describe the source cluster's brokers rather than the data, as
# MirrorMaker 2 leaves them out too. message.timestamp.type stays out so the
# target keeps each record's CreateTime.
NOT_COPIED = frozenset(
    {
        "follower.replication.throttled.replicas",
        "leader.replication.throttled.replicas",
        "message.timestamp.difference.max.ms",
        "message.timestamp.type",
        "unclean.leader.election.enable",
        "min.insync.replicas",
    }
)


@dataclass(frozen=True)
class Layout:
    """Partition counts of one route's topics on both sides (0: the topic is missing)."""

    source_partitions: int
    target_partitions: int


def partition_counts(admin, topics: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists."""
    counts = {}
    for topic in admin.describe_topics(topics):
        if topic["error_code"] == 0:
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def topic_configs(admin, topic: str) -> dict[str, str]:
    """The topic-level settings that were set on the topic itself."""
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    entries = next(iter(described.get("topic", described).values()), {}) if described else {}
    return {
        name: entry["value"]
        for name, entry in entries.items()
        if name not in NOT_COPIED and entry.get("value") is not None
    }


class TopicSync:
    """Keeps a direction's target topics at least as wide as their sources.

    With `manage` on, missing targets are created with the source's partition count
    and topic configs, and targets with fewer partitions grow. With it off, nothing is
    changed: routes to a narrower target fall back to hashing (the flow warns).
    """

    def __init__(self, source_admin, target_admin, routes: dict[str, str], manage: bool):
        self._source_admin = source_admin
        self._target_admin = target_admin
        self._routes = routes
        self._manage = manage

    def sync(self) -> dict[str, Layout]:
        """The layout of each route whose source topic exists, after fixing the targets."""
        sources = partition_counts(self._source_admin, list(self._routes))
        for topic in self._routes:
            if topic not in sources:
                log.warning("source topic %r does not exist yet; it is replicated once it does", topic)
        targets = partition_counts(self._target_admin, list(self._routes.values()))
        if self._manage:
            targets.update(self._create_missing(sources, targets))
            targets.update(self._grow(sources, targets))
        return {
            source: Layout(count, targets.get(self._routes[source], 0))
            for source, count in sources.items()
        }

    def _create_missing(self, sources: dict[str, int], targets: dict[str, int]) -> dict[str, int]:
        created = {}
        for source, count in sources.items():
            target = self._routes[source]
            if target in targets:
                continue
            configs = topic_configs(self._source_admin, source)
            try:
                self._target_admin.create_topics(
                    {target: {"num_partitions": count, "configs": configs}},
                    wait_for_metadata=True,
                )
                log.info("created target topic %r with %d partitions and configs %s",
                         target, count, configs or "{}")
            except TopicAlreadyExistsError:
                count = partition_counts(self._target_admin, [target]).get(target, count)
            created[target] = count
        return created

    def _grow(self, sources: dict[str, int], targets: dict[str, int]) -> dict[str, int]:
        grown = {}
        for source, count in sources.items():
            target = self._routes[source]
            if 0 < targets.get(target, 0) < count:
                self._target_admin.create_partitions({target: count})
                log.info("target topic %r grew from %d to %d partitions to follow %r",
                         target, targets[target], count, source)
                grown[target] = count
        return grown
