"""The Checkpoint: which source offsets the target has acknowledged, per partition.

A source offset may be committed only once the target acknowledged that record
and every record before it in the partition. Sends are tracked in order; the
committable position of a partition is the offset of its first unacknowledged
record. It is plain Python: futures only need `is_done` and `exception` (None
once succeeded), as kafka-python's `FutureRecordMetadata` has.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable

Partition = Hashable  # a kafka TopicPartition in practice


@dataclass(frozen=True)
class Failure:
    """The first unacknowledged record of a partition failed to reach the target."""

    partition: Partition
    offset: int
    error: BaseException


class Rejected:
    """A send that failed before it left: it looks like a failed future."""

    is_done = True

    def __init__(self, error: BaseException):
        self.exception = error

    def succeeded(self) -> bool:
        return False


class Checkpoint:
    def __init__(self) -> None:
        self._pending: dict[Partition, deque[tuple[int, Any]]] = {}
        self._acked: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def pending(self, partition: Partition) -> deque[tuple[int, Any]]:
        """The partition's in-flight sends; append (offset, future) in send order."""
        queue = self._pending.get(partition)
        if queue is None:
            queue = self._pending[partition] = deque()
        return queue

    def done(self, partition: Partition, offset: int) -> None:
        """A record that needs no send (filtered or skipped) is settled in its place."""
        queue = self.pending(partition)
        if queue:
            queue.append((offset, None))
        else:
            self._acked[partition] = offset + 1

    def settle(self) -> list[Failure]:
        """Advance each partition past its acknowledged prefix; return the failures that block it.

        1. Pop every leading send whose future succeeded (or that needed none).
        2. Stop at the first one still in flight: nothing after it is acknowledged yet.
        3. Stop at the first failed one and report it; the caller skips, rewinds or stops.
        """
        failures = []
        for partition, queue in self._pending.items():
            acked = None
            popleft = queue.popleft
            while queue:
                offset, future = queue[0]
                # `exception is None` once done is what succeeded() tests; read directly, this
                # loop runs once per record.
                if future is not None and not (future.is_done and future.exception is None):
                    if future.is_done:
                        failures.append(Failure(partition, offset, future.exception))
                    break
                popleft()
                acked = offset
            if acked is not None:
                self._acked[partition] = acked + 1
        return failures

    def skip_failed(self, partition: Partition) -> None:
        """Treat the failed head of the partition as settled (onError: skip)."""
        offset, _ = self._pending[partition].popleft()
        self._acked[partition] = offset + 1

    def rewind(self, partition: Partition) -> int | None:
        """Forget the partition's in-flight sends; return the offset to consume again from."""
        queue = self._pending.pop(partition, None)
        if not queue:
            return self._acked.get(partition)
        return queue[0][0]

    def advance(self, partition: Partition, offset: int) -> None:
        """Move an idle partition's position past records that were never ours to send.

        Transaction markers and aborted records take offsets but never reach the
        loop; the consumer's position steps over them, and so must the commit.
        """
        if not self._pending.get(partition) and offset > self._acked.get(partition, -1):
            self._acked[partition] = offset

    def position(self, partition: Partition) -> int | None:
        """The next offset to commit for the partition, if any record was acknowledged."""
        return self._acked.get(partition)

    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

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
