"""The driver's check that every replicated partition has an owner in its group.

A member reports the lag of the partitions it owns; a partition that nobody owns copies
nothing and shows in no member's figures. The 30-minute chaos soak found a cooperative
rebalance that never finished (its second half was owed by a member that the storm stopped
and replaced under the same group.instance.id): six partitions stayed unowned for 8.5
minutes in a group the broker called Stable, with nothing logged. This says so, once per
episode, naming the partitions.
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

    def check(self, rows: Iterable[PartitionStatus], running: dict[str, int]) -> None:
        """`rows` from replicator.offsets.describe_groups; `running`: members per direction."""
        unowned: dict[str, list[str]] = {}
        for row in rows:
            if row.owner is None and running.get(row.direction, 0) > 0:
                unowned.setdefault(row.direction, []).append(f"{row.topic}[{row.partition}]")
        now = self.clock()
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
            if direction not in self._warned and now - since > 2 * group.session_timeout_ms / 1000:
                self._warned.add(direction)
                log.warning(
                    "%s: partitions without an owner in group %s for %.0fs although %d members "
                    "run: %s; nothing copies them until the group rebalances (a member leaving "
                    "or joining does it: stop one member for longer than sessionTimeoutMs, %d ms)",
                    direction, group.group_id, now - since, running[direction],
                    ", ".join(sorted(partitions)), group.session_timeout_ms)
