"""How a Flow makes acknowledged positions safe to commit: chosen once, at its start.

- `MapCommitter` (at least once): the spans the target acknowledged are written to the
  offset map topic; once written, the positions they cover may go to the source group.
- `TransactionalCommitter` (`exactlyOnce`): each source partition's open transaction gets
  its spans and next offset, then is committed on the target; the source group then gets
  the same positions, for the tools that read them.

The Flow commits to the group exactly what `ready` or `flush` returns, and nothing else.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

from . import map_topic
from .config import ClusterConfig
from .errors import ClusterError
from .offset_map import Journal
from .transactions import Transactions

log = logging.getLogger(__name__)


class Loop(Protocol):
    """What a committer may ask of the Flow's loop."""

    def acknowledged(self) -> dict:
        """Positions the target acknowledged and the group has not been given yet."""

    def run_until(self, done: Callable[[], bool], seconds: float, take_fetched: bool = False) -> bool:
        """Handle the target's answers, fetching nothing new, until `done()`; its last value."""

    def quiet(self) -> bool:
        """Nothing written waits for an answer and no fetch is under way."""


class Committer(Protocol):
    # The longest time without a commit before the Flow stops fetching (None: never).
    patience: float | None

    def take_over(self, partitions) -> dict:
        """Newly assigned partitions: the positions to resume them from, where known."""

    def due(self) -> bool:
        """Whether a commit should be tried now, before the interval is up."""

    def ready(self, loop: Loop) -> dict | None:
        """The positions the group may get now; None while they are not safe yet."""

    def flush(self, loop: Loop, seconds: float) -> dict:
        """Make what was acknowledged safe within `seconds` (a rebalance); the positions."""

    def committed(self, loop: Loop) -> None:
        """The group took a commit."""

    def wait_for_write(self, loop: Loop) -> bool:
        """On the way out: wait a moment for a write under way; False if there is none."""

    def forget(self, partitions) -> None: ...

    def close(self) -> None: ...


class MapCommitter:
    """At least once: a position is committed once the offset map holds the spans before it."""

    def __init__(self, writer: map_topic.MapWriter, target: tuple[str, ClusterConfig],
                 patience: float, commit_each_acknowledgement: bool):
        self.patience = patience
        self._map = writer
        self._target = target
        self._each = commit_each_acknowledgement

    def take_over(self, partitions) -> dict:
        return {}  # the group's committed positions

    def due(self) -> bool:
        return self._map.writing and self._map.done()

    def ready(self, loop: Loop) -> dict | None:
        """Acknowledged positions whose spans the map topic holds; None while it is written."""
        if not self._map.writing:
            self._map.start(loop.acknowledged())
        try:
            return self._map.ready()
        except map_topic.MapWriteRefused as refused:
            side, cluster = self._target
            raise ClusterError(side, cluster.bootstrap_servers,
                               f"could not write the offset map topic {map_topic.TOPIC!r} "
                               f"({refused}); grant the replicator's principal Write on it") from None

    def flush(self, loop: Loop, seconds: float) -> dict:
        """Write the map now; the positions it covers ({} if the target did not answer)."""
        if self._map.writing:
            if not loop.run_until(self._map.done, seconds / 2):
                return {}
            self.ready(loop)  # takes the finished write; raises if it failed
        self._map.start(loop.acknowledged())
        if not loop.run_until(self._map.done, seconds / 2):
            return {}
        return self.ready(loop)

    def committed(self, loop: Loop) -> None:
        if self._each and loop.acknowledged():
            self._map.start(loop.acknowledged())  # acknowledged during the last write

    def wait_for_write(self, loop: Loop) -> bool:
        if not self._map.writing:
            return False
        loop.run_until(self._map.done, 0.2)
        return True

    def forget(self, partitions) -> None:
        self._map.forget(partitions)

    def close(self) -> None:
        pass


class TransactionalCommitter:
    """Exactly once: positions are committed on the target with the copies before them."""

    patience = None  # the transactions bound what a replay copies again

    def __init__(self, transactions: Transactions, journal: Journal, target: tuple[str, ClusterConfig],
                 timeout_seconds: float, read_positions: Callable[[list], dict], label: str):
        self._transactions = transactions
        self._journal = journal
        self._target = target
        self._timeout = timeout_seconds
        self._read_positions = read_positions
        self._label = label

    def take_over(self, partitions) -> dict:
        """Fence the partitions' earlier owners, then read where they stopped."""
        fresh = [tp for tp in partitions if not self._transactions.owns(tp)]
        if not fresh:
            return {}
        self._transactions.own(fresh)
        found = self._read_positions(fresh)
        if found:
            log.info("%s: resuming from the positions committed on the target: %s", self._label,
                     ", ".join(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in sorted(found.items())))
        return found

    def due(self) -> bool:
        return False

    def ready(self, loop: Loop) -> dict | None:
        return self._transact(loop, self._timeout, take_fetched=True)

    def flush(self, loop: Loop, seconds: float) -> dict:
        return self._transact(loop, seconds, take_fetched=False) or {}

    def _transact(self, loop: Loop, seconds: float, take_fetched: bool) -> dict | None:
        """Commit the open transactions; return the positions the source group may now get
        (None while some copies are not acknowledged).

        The fetches under way are taken (not fetched again) and everything written is awaited
        first: a transaction commits what the target acknowledged, and positions after it."""
        transactions = self._transactions
        if transactions.open():
            if not loop.run_until(loop.quiet, seconds, take_fetched):
                return None
            delivery = transactions.prepare(loop.acknowledged(), self._journal)
            if delivery is not None:
                if not loop.run_until(lambda: delivery.is_done, seconds) or delivery.exception is not None:
                    side, cluster = self._target
                    problem = (f"refused ({type(delivery.exception).__name__}); grant the replicator's "
                               "principal Write on it" if delivery.exception is not None
                               else f"not acknowledged within {seconds:.0f}s")
                    raise ClusterError(side, cluster.bootstrap_servers,
                                       f"a transaction's positions for the offset map topic "
                                       f"{map_topic.TOPIC!r} were {problem}")
            transactions.commit()
        return transactions.committed(loop.acknowledged())

    def committed(self, loop: Loop) -> None:
        pass

    def wait_for_write(self, loop: Loop) -> bool:
        return False

    def forget(self, partitions) -> None:
        self._transactions.release(partitions)

    def close(self) -> None:
        self._transactions.release()
