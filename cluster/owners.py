"""The driver's check that every replicated partition has an owner in its group.

A member reports the lag of the partitions it owns; a partition that nobody owns copies
nothing and shows in no member's figures. The 30-minute chaos soak found a cooperative
rebalance that never finished (its second half was owed by a member that the storm stopped
and replaced under the same group.instance.id): six partitions stayed unowned for 8.5
minutes in a group the broker called Stable, with nothing logged. A member killed and
restarted by Ray under its group.instance.id in the middle of such a rebalance does the same.
This says so, once per episode, naming the partitions, and has the direction's members join
the group again: its leader's join makes it rebalance and give them out.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from replicator.config import ReplicatorConfig
from replicator.offsets import PartitionStatus

log = logging.getLogger("cluster.owners")

CHECK_SECONDS = 30.0


class OwnerWatch:
    """Warns when a direction with running members leaves partitions unowned for longer
    than two of its sessions (a rebalance takes less; an expired member's partitions move
    within one)."""

    def __init__(self, config: ReplicatorConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self._since: dict[str, float] = {}  # direction → when it first had unowned partitions
        self._warned: set[str] = set()

    def check(self, rows: Iterable[PartitionStatus], running: dict[str, int]) -> list[str]:
        """`rows` from replicator.offsets.describe_groups; `running`: members per direction.
        Returns the directions whose group must rebalance (at every check while it lasts)."""
        unowned: dict[str, list[str]] = {}
        for row in rows:
            if row.owner is None and running.get(row.direction, 0) > 0:
                unowned.setdefault(row.direction, []).append(f"{row.topic}[{row.partition}]")
        now = self.clock()
        stuck = []
        for direction in self.config.enabled_directions():
            partitions = unowned.get(direction)
            if not partitions:
                if direction in self._warned:
                    log.info("%s: every partition has an owner again", direction)
                self._since.pop(direction, None)
                self._warned.discard(direction)
                continue
            since = self._since.setdefault(direction, now)
            group = self.config.group(direction)
            if now - since <= 2 * group.session_timeout_ms / 1000:
                continue
            stuck.append(direction)
            if direction not in self._warned:
                self._warned.add(direction)
                log.warning(
                    "%s: partitions without an owner in group %s for %.0fs although %d members "
                    "run: %s; nothing copies them until the group rebalances: asking the "
                    "members to join it again", direction, group.group_id, now - since,
                    running[direction], ", ".join(sorted(partitions)))
        return stuck
