"""Source topics found and target topics shaped like them: created, grown, and their configs copied."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from .config_sync import NOT_COPIED, ConfigSync
from .errors import TopicRecreated
from .selection import Selection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Partition counts of one route's topics on both sides (0: the topic is missing)."""

    source_partitions: int
    target_partitions: int


@dataclass(frozen=True)
class Synced:
    """What one sync found: the direction's routes (source → target; explicit ones even while
    their source is missing), the layout of each whose source exists, and its topic id; and
    when its listing began (time.time()), so that a member can tell an answer to its question."""

    routes: dict[str, str]
    layouts: dict[str, Layout]
    ids: dict[str, str | None]
    at: float = 0.0


@dataclass
class Identities:
    """The topic id of every source topic a member copied, and the topics it refused since.

    A member keeps one across the Flows it runs, so that a Flow started again after a failure
    still refuses a topic that was deleted and created again. It lives in memory: a topic
    recreated while no member of the direction ran is not recognised (Kafka deletes a
    topic's committed offsets with it, so nothing of the old topic's is left to compare).
    """

    ids: dict[str, str] = field(default_factory=dict)
    refused: dict[str, TopicRecreated] = field(default_factory=dict)


# A broker without topic ids (before Kafka 2.8) answers with the zero UUID.
_NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"


def source_topics(admin, topics: list[str] | None) -> dict[str, tuple[int, str | None]]:
    """Partition count and topic id of each of `topics` that exists (None: every topic).

    Raises a retriable error of a topic the cluster cannot describe now (a leader being
    elected, a broker restarting): taken for missing, the topic would be dropped as if deleted."""
    found = {}
    for topic in admin.describe_topics(topics):
        error = for_code(topic["error_code"]) if topic["error_code"] else None
        if error is not None:
            if error.retriable and error is not UnknownTopicOrPartitionError:
                raise error(f"describing source topic {topic['name']!r}")
            continue
        topic_id = str(topic.get("topic_id")) if topic.get("topic_id") is not None else None
        found[topic["name"]] = (len(topic["partitions"]), None if topic_id == _NO_TOPIC_ID else topic_id)
    return found


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
    """Finds a direction's source topics and keeps their targets at least as wide.

    With patterns, every source topic is listed (one metadata request) and the selection
    chosen among them. With `manage` on, missing targets are created with the source's
    partition count and topic configs, and targets with fewer partitions grow. With it
    off, nothing is changed: routes to a narrower target fall back to hashing (the flow warns).
    """

    def __init__(self, source_admin, target_admin, selection: Selection, manage: bool,
                 configs: ConfigSync | None = None):
        """`configs`: keeps the targets' configs like their sources' too (syncTopicConfigs)."""
        self._source_admin = source_admin
        self._target_admin = target_admin
        self._selection = selection
        self._manage = manage
        self._configs = configs
        self._missing: set[str] = set()  # explicit topics said to be missing, said once
        self._routes: dict[str, str] = {}

    def sync(self) -> Synced:
        """The routes, and the layout and id of each whose source exists, after fixing the targets."""
        selection = self._selection
        at = time.time()
        found = source_topics(self._source_admin,
                              None if selection.by_pattern else list(selection.explicit))
        self._routes = routes = selection.routes(found)
        sources = {topic: found[topic][0] for topic in routes if topic in found}
        for topic in selection.explicit:
            if topic not in sources and topic not in self._missing:
                log.warning("source topic %r does not exist yet; it is replicated once it does", topic)
            (self._missing.discard if topic in sources else self._missing.add)(topic)
        targets = partition_counts(self._target_admin, [routes[topic] for topic in sources])
        if self._manage:
            targets.update(self._create_missing(sources, targets))
            targets.update(self._grow(sources, targets))
        if self._configs is not None:
            self._configs.sync({source: routes[source] for source in sources if targets.get(routes[source])})
        layouts = {source: Layout(count, targets.get(routes[source], 0)) for source, count in sources.items()}
        return Synced(routes, layouts, {topic: found[topic][1] for topic in sources}, at)

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
