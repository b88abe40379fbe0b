"""The driver's config file, read again when it changes (a mounted ConfigMap, an edit, SIGHUP).

Only the members' count can change under running members: a new `replicaCount` (or
`replication.<direction>.replicaCount`) is a new plan, which the supervisor applies by
starting or stopping members. Every other setting is in the members' own Kafka clients
and flows, so it needs a restart: the change is logged, naming each field, and the driver
keeps running on the values it started with. A file that does not load (invalid YAML,
a bad value, a half-written file) is logged with its errors and ignored.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicator.config import DIRECTIONS, ReplicatorConfig, load_config
from replicator.errors import ConfigError

log = logging.getLogger("cluster.reload")

REPLICA_FIELDS = ("replicaCount",
                  *(f"replication.{direction}.replicaCount" for direction in DIRECTIONS))


@dataclass(frozen=True)
class Change:
    """What a changed file asks for, against the config that runs."""

    config: ReplicatorConfig  # the running config with the file's replica counts
    scaled: list[str]  # e.g. "sourceToTarget 2 → 4 members"
    needs_restart: list[str]  # changed fields that only a restart applies, e.g. "consumer.fetchMaxBytes"


class ConfigFile:
    """Tells the driver when its config file asks for something new."""

    def __init__(self, path: Path, running: ReplicatorConfig):
        self.path = path
        self.running = running
        self._seen = _digest(path)

    def check(self, asked: bool = False) -> Change | None:
        """A Change if the file's contents changed (or `asked`, on SIGHUP) and load; else None.

        Logs what it finds, including a file that does not load, which it otherwise ignores.
        """
        digest = _digest(self.path)
        if digest == self._seen and not asked:
            return None
        self._seen = digest
        try:
            wanted = load_config(self.path)
        except ConfigError as exc:
            log.error("config reload: %s; the driver keeps running on the config it has", exc)
            return None
        change = compare(self.running, wanted)
        for field in change.needs_restart:
            log.warning("config reload: %s changed in %s; a restart of the driver is needed to "
                        "apply it (the members keep running on the previous value)", field, self.path)
        if change.scaled:
            log.info("config reload: %s: scaling %s", self.path, ", ".join(change.scaled))
        elif not change.needs_restart:
            log.info("config reload: %s holds the config that runs; nothing to do", self.path)
        self.running = change.config
        return change


def compare(running: ReplicatorConfig, wanted: ReplicatorConfig) -> Change:
    """The replica counts `wanted` applies to `running`, and the fields that need a restart."""
    changed = _changed(running.model_dump(by_alias=True), wanted.model_dump(by_alias=True))
    scaled_config = _with_replica_counts(running, wanted)
    scaled = [f"{direction} {running.members(direction)} → {scaled_config.members(direction)} members"
              for direction in running.enabled_directions()
              if running.members(direction) != scaled_config.members(direction)]
    return Change(scaled_config, scaled, [f for f in changed if f not in REPLICA_FIELDS])


def _with_replica_counts(config: ReplicatorConfig, source: ReplicatorConfig) -> ReplicatorConfig:
    directions = {
        attr: getattr(config.replication, attr).model_copy(
            update={"replica_count": getattr(source.replication, attr).replica_count})
        for attr in ("source_to_target", "target_to_source")}
    return config.model_copy(update={"replica_count": source.replica_count,
                                     "replication": config.replication.model_copy(update=directions)})


def _changed(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted names of the leaves that differ (a list counts as one leaf)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [field for key in sorted(old.keys() | new.keys(), key=str)
                for field in _changed(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    return [] if old == new else [path]


def _digest(path: Path) -> bytes | None:
    """The file's contents, hashed; None if it cannot be read (the check then says why)."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
