"""Which source topics a direction copies, and under which name on the target.

Explicit `topics[]` routes are copied whatever the patterns say; `include` patterns
(whole names, `re.fullmatch`) add every other topic they match that no `exclude`
pattern matches, under `targetTopicPrefix` + its name. Internal topics are never
selected by a pattern: Kafka's own (`__consumer_offsets`, ...) and the replicator's
(its producer registry and offset map), which each cluster keeps for itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .config import DirectionConfig

INTERNAL_PREFIXES = ("__", "kafka-replicator-")


def internal(topic: str) -> bool:
    """Kafka's topics and the replicator's own: never copied by a pattern."""
    return topic.startswith(INTERNAL_PREFIXES)


@dataclass(frozen=True)
class Selection:
    explicit: dict[str, str]  # source topic → target topic, from topics[]
    include: tuple[re.Pattern, ...]
    exclude: tuple[re.Pattern, ...]
    prefix: str

    @classmethod
    def of(cls, settings: DirectionConfig) -> Selection:
        return cls({route.source_topic_name: route.target for route in settings.topics},
                   tuple(map(re.compile, settings.include)), tuple(map(re.compile, settings.exclude)),
                   settings.target_topic_prefix)

    @property
    def by_pattern(self) -> bool:
        """Whether the source's topics must be listed to know what is copied."""
        return bool(self.include)

    def target(self, topic: str) -> str | None:
        """The target topic of a source topic, or None if it is not copied."""
        explicit = self.explicit.get(topic)
        if explicit is not None:
            return explicit
        if (internal(topic) or not any(p.fullmatch(topic) for p in self.include)
                or any(p.fullmatch(topic) for p in self.exclude)):
            return None
        return self.prefix + topic

    def routes(self, existing: Iterable[str]) -> dict[str, str]:
        """Source → target of every explicit topic (existing or not) and of the existing
        topics the patterns select."""
        routes = dict(self.explicit)
        for topic in existing:
            target = self.target(topic)
            if target is not None:
                routes[topic] = target
        return routes
