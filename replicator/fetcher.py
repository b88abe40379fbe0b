"""The source side of the batch data path: raw batches of the partitions a member owns.

The member's position in each partition lives here; the consumer group only says
which partitions are ours and where to start. One fetch is in flight per broker, in
that broker's fetch session (replicator.fetch_session): once it holds the partitions,
a fetch lists only those whose position moved, so that a round's cost follows what
changed, not how many partitions are owned. A seek or a pause invalidates answers to
fetches sent before it.

While records flow from a broker, its fetch waits there for `min_bytes` or `flowing_wait_ms`:
each round then carries many records, where answering at the first one made a fetch and a
write per record or two at a thousand records a second, and the CPU they took slowed the
brokers beside us (BENCHMARKS.md, *Where the time goes*). From a quiet broker the fetch
returns at its first record, so a lone record is not held back.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable

from kafka.errors import UnknownTopicOrPartitionError

from .fetch_session import FetchSession

log = logging.getLogger(__name__)


@dataclass
class Fetched:
    """One partition's answer: its record set, or the error that replaced it."""

    tp: object
    position: int
    records: bytes
    aborted: list[tuple[int, int]]
    error: type | None


@dataclass(frozen=True)
class FetchAnswer:
    """What the IO thread hands back for one fetch request: the response, or the exception
    that ended it; `sent` is what the broker's session holds, per partition (offset, stamp)."""

    node: object
    sent: dict
    answer: object


class Fetcher:
    def __init__(self, wire, protocol, partition_max_bytes: int, max_bytes: int, max_wait_ms: int,
                 min_bytes: int = 1, flowing_wait_ms: int = 0):
        self._wire = wire
        self._protocol = protocol
        self._partition_max_bytes = partition_max_bytes
        self._max_bytes = max_bytes
        self._max_wait_ms = max_wait_ms
        self._min_bytes = min_bytes
        self._flowing_wait_ms = flowing_wait_ms
        self._flowing: set = set()  # brokers whose last answer brought records
        self._positions: dict[object, int] = {}
        # Moved at each seek and pause, never reused: an answer read against an older stamp is stale.
        self._stamps: dict[object, int] = {}
        self._stamp = itertools.count(1)
        self._paused: set = set()
        self._nodes: dict[object, object] = {}  # the broker whose session fetches each partition
        self._unplaced: set = set()  # to be given to (or checked against) its leader's session
        self._sessions: dict[object, FetchSession] = {}
        self._metadata = None  # the metadata the partitions were placed by
        self._busy_nodes: set = set()
        self._turn = 0
        self.high_watermarks: dict[object, int] = {}

    def assign(self, tp, offset: int) -> None:
        self.seek(tp, offset)

    def seek(self, tp, offset: int) -> None:
        self._positions[tp] = offset
        self._stamps[tp] = next(self._stamp)
        self._changed(tp)

    def advance(self, tp, offset: int) -> None:
        """Move past what was just handed on (no new stamp: nothing in flight is stale)."""
        if offset > self._positions.get(tp, offset):
            self._positions[tp] = offset
            self._changed(tp)

    def position(self, tp) -> int | None:
        return self._positions.get(tp)

    def owned(self) -> list:
        return list(self._positions)

    def forget(self, tps) -> None:
        for tp in tps:
            self._unplace(tp)
            self._positions.pop(tp, None)
            self._stamps.pop(tp, None)
            self._paused.discard(tp)
            self.high_watermarks.pop(tp, None)

    def pause(self, tp) -> None:
        """Fetch no more for `tp`; answers already on their way are ignored."""
        self._paused.add(tp)
        self._stamps[tp] = next(self._stamp)
        self._unplace(tp)

    def resume(self, tp) -> None:
        if tp in self._paused:
            self._paused.discard(tp)
            if tp in self._positions:
                self._unplaced.add(tp)

    def _changed(self, tp) -> None:
        node = self._nodes.get(tp)
        if node is not None:
            self._sessions[node].changed(tp)
        elif tp not in self._paused:
            self._unplaced.add(tp)

    def _unplace(self, tp) -> None:
        node = self._nodes.pop(tp, None)
        if node is not None:
            self._sessions[node].remove(tp)
        self._unplaced.discard(tp)

    def _place(self) -> None:
        """Give each partition to its leader's session; all of them again when the metadata
        changed (a leader moved, a broker came or went)."""
        metadata = self._wire.metadata_stamp()
        if metadata != self._metadata:
            self._metadata = metadata
            self._unplaced.update(self._nodes)
        refresh = False
        for tp in list(self._unplaced):
            node = self._wire.leader(tp)
            if node is None:
                refresh = True
                continue
            self._unplaced.discard(tp)
            if self._nodes.get(tp) != node:
                self._unplace(tp)
                self._nodes[tp] = node
                session = self._sessions.get(node)
                if session is None:
                    session = self._sessions[node] = FetchSession()
                session.add(tp)
        if refresh:
            self._wire.refresh()

    def pump(self, on_answer: Callable) -> None:
        """Send one fetch to each broker that leads owned partitions and has none in flight."""
        if self._unplaced or self._wire.metadata_stamp() != self._metadata:
            self._place()
        for node, session in self._sessions.items():
            if node in self._busy_nodes or not session.wanted:
                continue
            listed, forgotten = session.next_request(self._positions, self._stamps, self._rotated)
            if node in self._flowing:
                min_bytes, wait_ms = self._min_bytes, self._flowing_wait_ms
            else:
                min_bytes, wait_ms = 1, self._max_wait_ms
            request = self._protocol.fetch_request(
                {tp: self._positions[tp] for tp in listed}, self._partition_max_bytes,
                self._max_bytes, wait_ms, min_bytes=min_bytes, session_id=session.session_id,
                session_epoch=session.epoch, forgotten=forgotten)
            self._busy_nodes.add(node)
            future = self._wire.send(node, request)
            future.add_both(lambda answer, node=node, sent=session.held:
                            on_answer(FetchAnswer(node, sent, answer)))

    def _rotated(self, partitions) -> list:
        # A broker returns an oversized batch only for the first partition of a response, so
        # no partition may always come first in a full fetch; in a session the broker moves
        # the partitions that returned records to the end itself.
        ordered = list(partitions)
        self._turn = (self._turn + 1) % max(1, len(ordered))
        return ordered[self._turn:] + ordered[:self._turn]

    def answered(self, node, sent: dict, answer) -> list[Fetched]:
        """The partitions of an answer that are still wanted, at the position they were asked."""
        self._busy_nodes.discard(node)
        session = self._sessions[node]
        if isinstance(answer, BaseException):
            self._flowing.discard(node)
            log.debug("fetch from node %s failed: %s", node, answer)
            session.reset()
            self._wire.refresh()
            return []
        error, session_id = self._protocol.fetch_session(answer)
        if not session.answered(error, session_id):
            log.debug("node %s refused fetch session %d (%s); fetching in full", node,
                      session_id, error.__name__)
            return []
        wanted = []
        parts = self._protocol.fetched(answer)
        if any(part.records for part in parts):
            self._flowing.add(node)
        else:
            self._flowing.discard(node)
        for part in parts:
            tp = part.tp
            asked = sent.get(tp)
            if asked is None or self._stamps.get(tp) != asked[1]:
                continue  # moved away or sought since the request left
            if part.error is not None:
                if getattr(part.error, "retriable", False) or getattr(part.error, "invalid_metadata", False):
                    self._wire.refresh()
                    self._unplaced.add(tp)  # its leader is checked again
                    if part.error is not UnknownTopicOrPartitionError:
                        continue  # the flow hears of a topic gone: deleted at the source, perhaps
            else:
                self.high_watermarks[tp] = part.high_watermark
            wanted.append(Fetched(tp, asked[0], part.records, part.aborted, part.error))
        return wanted

    @property
    def waiting(self) -> bool:
        """Whether a fetch is under way."""
        return bool(self._busy_nodes)

    def discard(self, node) -> None:
        """An answer that will not be read: its partitions are fetched again, in full (the
        broker counts what it returned as seen)."""
        self._busy_nodes.discard(node)
        self._sessions[node].reset()
