"""Target topics' configs kept in step with their sources' (`syncTopicConfigs`).

At each topic sync, the configs set on each source topic (its non-default ones) are
compared with its target's, and every difference in a synced config is made on the
target: set to the source's value, or, for a config the source no longer sets but the
target's topic does, reset to the target's default. Configs in NOT_COPIED and those the
direction's `syncTopicConfigs.exclude` matches are never written, whatever the target holds.
"""

from __future__ import annotations

import logging
import re

from kafka.admin import ConfigResource, ConfigResourceType

log = logging.getLogger(__name__)

# Never copied, at creation or later: they belong to the source cluster, not to the data.
NOT_COPIED = frozenset(
    {
        # Broker ids of the source cluster's replicas being throttled during a reassignment.
        "follower.replication.throttled.replicas",
        "leader.replication.throttled.replicas",
        # Copies carry their source timestamps, often older than these limits allow.
        "message.timestamp.difference.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
        # LogAppendTime would give the copies the target's append time instead of theirs.
        "message.timestamp.type",
        # Durability choices that depend on the target's brokers and replication factor.
        "unclean.leader.election.enable",
        "min.insync.replicas",
        # Tiered storage needs the target cluster's own remote storage set up.
        "remote.storage.enable",
        "local.retention.ms",
        "local.retention.bytes",
        # Replica placement names the source cluster's racks (Confluent Server).
        "confluent.placement.constraints",
    }
)
TOPIC_OVERRIDE = "DYNAMIC_TOPIC_CONFIG"  # a config set on the topic itself


def described(admin, topics: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Per topic, its non-default configs: name → (value, where it is set). Secrets, whose
    values the broker does not tell, are left out."""
    if not topics:
        return {}
    answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics])
    return {
        topic: {name: (entry["value"], entry.get("config_source", ""))
                for name, entry in entries.items() if entry.get("value") is not None}
        for topic, entries in answer.get("topic", {}).items()
    }


class ConfigSync:
    """Makes each target topic's synced configs those of its source topic."""

    def __init__(self, source_admin, target_admin, exclude: list[str]):
        self._source_admin = source_admin
        self._target_admin = target_admin
        self._exclude = tuple(map(re.compile, exclude))
        self._refused: set[tuple[str, str]] = set()  # (target, reason) said once

    def synced(self, name: str) -> bool:
        return name not in NOT_COPIED and not any(p.fullmatch(name) for p in self._exclude)

    def sync(self, routes: dict[str, str]) -> None:
        """Bring the targets of `routes` (source → target, both existing) in step."""
        sources = described(self._source_admin, list(routes))
        targets = described(self._target_admin, list(routes.values()))
        for source, target in routes.items():
            wanted = {name: value for name, (value, _) in sources.get(source, {}).items() if self.synced(name)}
            held = targets.get(target, {})
            changes = {name: ("SET", value) for name, value in wanted.items()
                       if held.get(name, (None, ""))[0] != value}
            changes.update({name: ("DELETE", None) for name, (_, where) in held.items()
                            if name not in wanted and where == TOPIC_OVERRIDE and self.synced(name)})
            if changes:
                self._change(source, target, changes, held)

    def _change(self, source: str, target: str, changes: dict, held: dict) -> None:
        answer = self._target_admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, target, configs=changes)], raise_on_unknown=False)
        outcome = answer.get("topic", {}).get(target, "OK")
        if outcome != "OK":
            if (target, outcome) not in self._refused:
                self._refused.add((target, outcome))
                log.warning("target topic %r refused the configs of source topic %r (%s): %s; exclude "
                            "them with syncTopicConfigs.exclude", target, source, outcome,
                            ", ".join(sorted(changes)))
            return
        for name, (op, value) in sorted(changes.items()):
            before = held.get(name, ("(default)", ""))[0]
            log.info("target topic %r config %s: %s → %s, as on source topic %r", target, name, before,
                     value if op == "SET" else "(default)", source)
