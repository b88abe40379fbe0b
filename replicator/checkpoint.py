"""The Checkpoint: which source offsets the target has acknowledged, per partition.

A source offset may be committed only once the target acknowledged that record
and every record before it in the partition. Writes are tracked in order, each
covering a range of source offsets [first, next); the committable position of a
partition is the start of its first unacknowledged range. It is plain Python:
deliveries only need `is_done`, `exception` (None once succeeded) and `withdraw()`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable

Partition = Hashable  # a kafka TopicPartition in practice


@dataclass(frozen=True)
class Failure:
    """The first unacknowledged range of a partition failed to reach the target."""

    partition: Partition
    offset: int
    next_offset: int
    error: BaseException


class Checkpoint:
    def __init__(self) -> None:
        self._pending: dict[Partition, deque[tuple[int, int, Any]]] = {}
        self._acked: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def pending(self, partition: Partition) -> deque[tuple[int, int, Any]]:
        """The partition's in-flight writes; append (first, next, delivery) in source order."""
        queue = self._pending.get(partition)
        if queue is None:
            queue = self._pending[partition] = deque()
        return queue

    def done(self, partition: Partition, first: int, next_offset: int) -> None:
        """Records that need no write (filtered or skipped) are settled in their place."""
        queue = self.pending(partition)
        if queue:
            queue.append((first, next_offset, None))
        else:
            self._acked[partition] = next_offset

    def settle(self) -> list[Failure]:
        """Advance each partition past its acknowledged prefix; return the failures that block it.

        1. Pop every leading write whose delivery succeeded (or that needed none).
        2. Stop at the first one still in flight: nothing after it is acknowledged yet.
        3. Stop at the first failed one and report it; the caller skips, rewinds or stops.
        """
        failures = []
        emptied = []
        for partition, queue in self._pending.items():
            acked = None
            popleft = queue.popleft
            while queue:
                first, next_offset, delivery = queue[0]
                if delivery is not None and not (delivery.is_done and delivery.exception is None):
                    if delivery.is_done:
                        failures.append(Failure(partition, first, next_offset, delivery.exception))
                    break
                popleft()
                acked = next_offset
            if acked is not None:
                self._acked[partition] = acked
            if not queue:
                emptied.append(partition)
        for partition in emptied:  # so that a round costs what is in flight, not what is owned
            del self._pending[partition]
        return failures

    def skip_failed(self, partition: Partition) -> None:
        """Treat the failed head of the partition as settled (onError: skip)."""
        _, next_offset, _ = self._pending[partition].popleft()
        self._acked[partition] = next_offset

    def rewind(self, partition: Partition) -> int | None:
        """Forget (and withdraw) the partition's in-flight writes; return the offset to read
        again from."""
        queue = self._pending.pop(partition, None)
        if not queue:
            return self._acked.get(partition)
        for _, _, delivery in queue:
            if delivery is not None:
                delivery.withdraw()
        return queue[0][0]

    def advance(self, partition: Partition, offset: int) -> None:
        """Move an idle partition's position past records that were never ours to send.

        Transaction markers and aborted records take offsets but are never written;
        the position steps over them, and so must the commit.
        """
        if not self._pending.get(partition) and offset > self._acked.get(partition, -1):
            self._acked[partition] = offset

    def position(self, partition: Partition) -> int | None:
        """The next offset to commit for the partition, if any record was acknowledged."""
        return self._acked.get(partition)

    def in_flight(self, partitions=None) -> int:
        """Writes not acknowledged yet, in all partitions or in `partitions`."""
        return sum(len(queue) for partition, queue in self._pending.items()
                   if partitions is None or partition in partitions)

    def to_commit(self) -> dict[Partition, int]:
        """Acknowledged positions (next offset to read) not committed yet."""
        return {
            partition: offset
            for partition, offset in self._acked.items()
            if self._committed.get(partition) != offset
        }

    def committed(self, positions: dict[Partition, int]) -> None:
        self._committed.update(positions)

    def forget(self, partitions) -> None:
        """Drop partitions this member no longer owns."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._acked.pop(partition, None)
            self._committed.pop(partition, None)
