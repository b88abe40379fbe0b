"""Group offset sync: chosen consumer groups find their positions waiting on the target.

Every `intervalSeconds` (the direction's controller runs it), for each source group that
`syncGroupOffsets.groups` names (exactly, or by a regular expression matching the whole
name), the committed offsets are translated through the offset map and committed for the same group on the target
cluster. As in MirrorMaker 2, a group with active members on the target is left alone
(it is reading there already), and an offset never moves backwards. The replicator's
own groups are never synced. `cutover` names its groups instead of the patterns.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from . import link
from .config import DIRECTIONS, ReplicatorConfig
from .translation import GroupPosition, Translator, coordinated

log = logging.getLogger(__name__)

IDLE_STATES = {"Empty", "Dead", ""}


@dataclass
class SyncFigures:
    """What the sync did, for metrics and `status`."""

    passes: int = 0
    seen: set[str] = field(default_factory=set)  # groups chosen and found on the source
    written: dict[str, int] = field(default_factory=dict)  # group -> offsets written, in total
    behind: dict[str, int] = field(default_factory=dict)  # group -> records the target is behind
    active: set[str] = field(default_factory=set)  # groups skipped: members on the target


class GroupSync:
    def __init__(self, config: ReplicatorConfig, direction: str, groups: Iterable[str] | None = None):
        """`groups`: these groups by name, instead of those `syncGroupOffsets.groups` names."""
        self.config = config
        self.direction = direction
        self.settings = config.direction(direction).sync_group_offsets
        self._patterns = [re.compile(pattern) for pattern in self.settings.groups]
        self._named = None if groups is None else set(groups)
        self.own = {config.group(name).group_id for name in DIRECTIONS}
        self.figures = SyncFigures()
        self.positions: dict[str, list[GroupPosition]] = {}  # each group's translation, last pass

    def chosen(self, groups) -> list[str]:
        """The groups to sync among `groups`: named by the settings (or by name), never our own."""
        return sorted(group for group in groups if group not in self.own and (
            group in self._named if self._named is not None
            else any(pattern.fullmatch(group) for pattern in self._patterns)))

    def active_on_target(self, groups) -> dict[str, int]:
        """The groups among `groups` that have members on the target, with how many."""
        target_side, target = self.config.clusters(self.direction)[1]
        admin = link.admin_client(target_side, target)
        try:
            with link.reaching(target_side, target):
                states = {group: coordinated(admin.describe_groups, [group]).get(group, {}) for group in groups}
        finally:
            admin.close()
        return {group: len(state.get("members") or ()) for group, state in states.items() if _active(state)}

    def sync_once(self, write: bool = True) -> dict[str, dict[TopicPartition, int]]:
        """One pass; returns what it wrote (or, with `write` off, would write), per group."""
        (_, _), (target_side, target) = self.config.clusters(self.direction)
        written: dict[str, dict[TopicPartition, int]] = {}
        with Translator(self.config, self.direction) as translator:
            with link.reaching(*self.config.clusters(self.direction)[0]):
                listed = [group["group_id"] for group in translator.source_admin.list_groups()]
            groups = self.chosen(listed)
            if not groups:
                return written
            maps = translator.maps()
            target_admin = link.admin_client(target_side, target)
            try:
                for group in groups:
                    committed = translator.committed(group)
                    if not any(tp.topic in translator.routes for tp in committed):
                        continue
                    rows = translator.translate(group, committed, maps)
                    self.positions[group] = rows
                    self.figures.seen.add(group)
                    changed = self._sync_group(target_admin, group, rows, write)
                    if changed:
                        written[group] = changed
            finally:
                target_admin.close()
        self.figures.passes += 1
        return written

    def _sync_group(self, admin, group: str, rows, write: bool) -> dict[TopicPartition, int]:
        with link.reaching(*self.config.clusters(self.direction)[1]):
            if _active(coordinated(admin.describe_groups, [group]).get(group, {})):
                if group not in self.figures.active and write:
                    log.info("group offset sync: %s has active members on the %s cluster; its "
                             "offsets there are its own (not synced while it has members)",
                             group, self.config.clusters(self.direction)[1][0])
                self.figures.active.add(group)
                return {}
            self.figures.active.discard(group)
            existing = {tp: meta.offset for tp, meta in
                        coordinated(admin.list_group_offsets, {group: None}).get(group, {}).items()}
            wanted = {TopicPartition(row.target_topic, row.partition): row.target_offset
                      for row in rows if row.target_offset is not None}
            forward = {tp: offset for tp, offset in wanted.items() if offset > existing.get(tp, -1)}
            self.figures.behind[group] = sum(
                max(0, offset - max(existing.get(tp, 0), 0)) for tp, offset in wanted.items())
            if not forward or not write:
                return forward
            errors = coordinated(admin.alter_group_offsets, group, {
                tp: OffsetAndMetadata(offset, "", -1) for tp, offset in forward.items()})
        refused = {tp: error.__name__ for tp, error in errors.items() if error.errno != 0}
        done = {tp: offset for tp, offset in forward.items() if tp not in refused}
        if refused:
            log.warning("group offset sync: %s: the %s cluster refused %s", group,
                        self.config.clusters(self.direction)[1][0], refused)
        if done:
            self.figures.written[group] = self.figures.written.get(group, 0) + len(done)
            self.figures.behind[group] = sum(
                max(0, offset - max(done.get(tp, existing.get(tp, 0)), 0)) for tp, offset in wanted.items())
            log.info("group offset sync: %s: %s", group, ", ".join(
                f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in sorted(done.items())))
        return done


def _active(state: dict) -> bool:
    """Whether a group's description shows members (or a state only members give it)."""
    return state.get("group_state", "") not in IDLE_STATES or bool(state.get("members"))
