"""The source side of the batch data path: raw batches of the partitions a member owns.

The member's position in each partition lives here; the consumer group only says
which partitions are ours and where to start. One fetch is in flight per broker;
a seek or a pause invalidates answers to fetches sent before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from kafka.errors import UnknownTopicOrPartitionError

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
    that ended it; `sent` is what was asked, per partition (offset, epoch)."""

    node: object
    sent: dict
    answer: object


class Fetcher:
    def __init__(self, wire, protocol, partition_max_bytes: int, max_bytes: int, max_wait_ms: int):
        self._wire = wire
        self._protocol = protocol
        self._partition_max_bytes = partition_max_bytes
        self._max_bytes = max_bytes
        self._max_wait_ms = max_wait_ms
        self._positions: dict[object, int] = {}
        self._epochs: dict[object, int] = {}
        self._paused: set = set()
        self._busy_nodes: set = set()
        self._turn = 0
        self.high_watermarks: dict[object, int] = {}

    def assign(self, tp, offset: int) -> None:
        self.seek(tp, offset)

    def seek(self, tp, offset: int) -> None:
        self._positions[tp] = offset
        self._epochs[tp] = self._epochs.get(tp, 0) + 1

    def advance(self, tp, offset: int) -> None:
        """Move past what was just handed on (no new epoch: nothing in flight is stale)."""
        if offset > self._positions.get(tp, offset):
            self._positions[tp] = offset

    def position(self, tp) -> int | None:
        return self._positions.get(tp)

    def owned(self) -> list:
        return list(self._positions)

    def forget(self, tps) -> None:
        for tp in tps:
            self._positions.pop(tp, None)
            self._epochs.pop(tp, None)
            self._paused.discard(tp)
            self.high_watermarks.pop(tp, None)

    def pause(self, tp) -> None:
        """Fetch no more for `tp`; answers already on their way are ignored."""
        self._paused.add(tp)
        self._epochs[tp] = self._epochs.get(tp, 0) + 1

    def resume(self, tp) -> None:
        self._paused.discard(tp)

    def pump(self, on_answer: Callable) -> None:
        """Send one fetch to each broker that leads owned partitions and has none in flight."""
        by_node: dict[object, dict] = {}
        owned = list(self._positions.items())
        # Rotate the order: a broker returns an oversized batch only for the first
        # partition of a response, so no partition may always come last.
        self._turn = (self._turn + 1) % max(1, len(owned))
        for tp, offset in owned[self._turn:] + owned[:self._turn]:
            if tp in self._paused:
                continue
            node = self._wire.leader(tp)
            if node is None:
                self._wire.refresh()
                continue
            if node not in self._busy_nodes:
                by_node.setdefault(node, {})[tp] = offset
        for node, offsets in by_node.items():
            request = self._protocol.fetch_request(offsets, self._partition_max_bytes,
                                                   self._max_bytes, self._max_wait_ms)
            sent = {tp: (offset, self._epochs[tp]) for tp, offset in offsets.items()}
            self._busy_nodes.add(node)
            future = self._wire.send(node, request)
            future.add_both(lambda answer, node=node, sent=sent: on_answer(FetchAnswer(node, sent, answer)))

    def answered(self, node, sent: dict, answer) -> list[Fetched]:
        """The partitions of an answer that are still wanted, at the position they were asked."""
        self._busy_nodes.discard(node)
        if isinstance(answer, BaseException):
            log.debug("fetch from node %s failed: %s", node, answer)
            self._wire.refresh()
            return []
        wanted = []
        for part in self._protocol.fetched(answer):
            asked = sent.get(part.tp)
            if asked is None or self._epochs.get(part.tp) != asked[1]:
                continue  # moved away or sought since the request left
            if part.error is not None:
                if getattr(part.error, "retriable", False) or getattr(part.error, "invalid_metadata", False):
                    self._wire.refresh()
                    if part.error is not UnknownTopicOrPartitionError:
                        continue  # the flow hears of a topic gone: deleted at the source, perhaps
            else:
                self.high_watermarks[part.tp] = part.high_watermark
            wanted.append(Fetched(part.tp, asked[0], part.records, part.aborted, part.error))
        return wanted

    @property
    def waiting(self) -> bool:
        """Whether a fetch is under way."""
        return bool(self._busy_nodes)

    def discard(self, node) -> None:
        """An answer that will not be read: its partitions are fetched again."""
        self._busy_nodes.discard(node)
