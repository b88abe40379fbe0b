"""One partition's committed records, read in offset order without a consumer group.

`verify` walks a source partition and its copy side by side; holding either in memory
would not do for millions of records, so a PartitionLog keeps one fetch's records at a
time and hands out its batches as Chunks, whose records are decoded only when asked, as
(offset, timestamp, fields, producer id) tuples, `fields` being the record's key, value and
headers as encoded (`batches.record_fields`). It reads as a
`read_committed` consumer does: no records of aborted transactions, no markers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterator

from kafka.errors import OffsetOutOfRangeError

from . import batches, wire

FETCH_BYTES = 1 << 20
FETCH_TIMEOUT_MS = 30_000
LEADER_WAIT_SECONDS = 30.0

LogRecord = tuple[int, int, bytes, int]  # offset, timestamp, fields, producer id


class Chunk:
    """The records of one fetched batch that fall in the range asked, decoded only if asked."""

    __slots__ = ("batch", "first", "next", "_records")

    def __init__(self, batch: batches.Batch, first: int, next_: int):
        self.batch = batch
        self.first = first
        self.next = next_
        self._records: list[LogRecord] | None = None

    @property
    def producer_id(self) -> int:
        return self.batch.producer_id

    @property
    def whole(self) -> bool:
        """Every record of the batch, at consecutive offsets (the cleaner left no gaps)."""
        batch = self.batch
        return (self.first == batch.base_offset and self.next == batch.next_offset and batch.magic == 2
                and batch.record_count == batch.last_offset_delta + 1)

    @property
    def count(self) -> int:
        return self.next - self.first if self.whole else len(self.records())

    def records(self) -> list[LogRecord]:
        if self._records is None:
            first, next_, producer = self.first, self.next, self.batch.producer_id
            self._records = [(offset, timestamp, fields, producer)
                             for offset, timestamp, fields in batches.record_fields(self.batch)
                             if first <= offset < next_]
        return self._records

    def same_records_as(self, other: Chunk) -> bool:
        """Whether two whole batches hold records with the same timestamps, keys, values and
        headers, in the same order: their records' bytes are the same, and so is what
        those bytes are relative to. A batch copied as bytes compares in one memcmp."""
        a, b = self.batch, other.batch
        kept = batches.COMPRESSION_MASK | batches.LOG_APPEND_TIME
        return (a.record_count == b.record_count and a.base_timestamp == b.base_timestamp
                and (a.attributes & kept) == (b.attributes & kept)
                and (not a.attributes & batches.LOG_APPEND_TIME or a.max_timestamp == b.max_timestamp)
                and a.data[batches.HEADER_SIZE:].tobytes() == b.data[batches.HEADER_SIZE:].tobytes())


class PartitionLog:
    """Reads one partition through a `wire.Wire` that tracks its topic."""

    def __init__(self, link: wire.Wire, tp, log_start: Callable[[], int], fetch_bytes: int = FETCH_BYTES):
        self._wire = link
        self._tp = tp
        self._log_start = log_start  # asked when a fetch finds its offset deleted
        self._fetch_bytes = fetch_bytes
        self._pending: deque[batches.Batch] = deque()  # fetched, the readable batches in [_at, _fetch_at)
        self._at = 0
        self._fetch_at = 0
        self._ended = False  # the last fetch found nothing more at _fetch_at
        self._ahead: _Sent | None = None  # the next fetch, sent before it is needed
        self.fetches = 0
        self.log_start = 0  # the log's start, as the last fetch that found its offset deleted saw it

    def chunks(self, start: int, end: int) -> Iterator[Chunk]:
        """The records with offsets in [start, end), batch by batch; read it to its end before
        the next call."""
        if not self._at <= start <= self._fetch_at:
            self._pending.clear()
            self._fetch_at = start
            self._ended = False
        pending = self._pending
        self._at = start
        while self._at < end:
            if not pending:
                if self._fetch_at >= end or self._ended or not self._fetch():
                    self._at = max(self._at, min(end, self._fetch_at))
                    return
                continue
            batch = pending[0]
            if batch.next_offset <= self._at:
                pending.popleft()
                continue
            if batch.base_offset >= end:
                self._at = end
                return
            first, stop = max(batch.base_offset, self._at), min(batch.next_offset, end)
            if stop == batch.next_offset:
                pending.popleft()
            self._at = stop
            yield Chunk(batch, first, stop)

    def records(self, start: int, end: int) -> Iterator[LogRecord]:
        """The records with offsets in [start, end), one by one."""
        for chunk in self.chunks(start, end):
            yield from chunk.records()

    def _fetch(self) -> bool:
        """Fetch from `_fetch_at` on; False at the end of what can be read now."""
        fetched = self._answer()
        if fetched is None:
            return False
        found = batches.split(fetched.records)
        at = self._fetch_at
        if not found or found[-1].next_offset <= at:
            self._ended = True
            return False
        self._pending.extend(batch for batch, readable in batches.readable(found, fetched.aborted)
                             if readable and batch.next_offset > at)
        self._fetch_at = found[-1].next_offset
        if self._fetch_at < fetched.high_watermark:
            self._ahead = self._send(self._fetch_at)  # on its way while these are compared
        return True

    def _answer(self) -> wire.FetchedPartition | None:
        """This partition's part of a fetch answer; None when its offset is past the log's end."""
        deadline = time.monotonic() + LEADER_WAIT_SECONDS
        while True:
            ahead, self._ahead = self._ahead, None
            sent = ahead if ahead is not None and ahead.offset == self._fetch_at else self._send(self._fetch_at)
            if sent is not None:
                answer = sent.answer()
                self.fetches += 1
                if not isinstance(answer, BaseException):
                    [fetched] = wire.fetched(answer)
                    if fetched.error is None:
                        return fetched
                    if fetched.error is OffsetOutOfRangeError:
                        start = self.log_start = self._log_start()
                        if self._fetch_at >= start:
                            self._ended = True
                            return None
                        self._fetch_at = start  # deleted since: by retention, or by hand
                        continue
                    if not (getattr(fetched.error, "retriable", False)
                            or getattr(fetched.error, "invalid_metadata", False)):
                        raise fetched.error(f"fetch of {self._tp.topic}[{self._tp.partition}] "
                                            f"at offset {self._fetch_at}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not fetch {self._tp.topic}[{self._tp.partition}] at "
                                   f"offset {self._fetch_at} within {LEADER_WAIT_SECONDS:.0f}s")
            self._wire.refresh()
            time.sleep(0.2)

    def _send(self, offset: int) -> _Sent | None:
        """A fetch at `offset` sent to the partition's leader; None while it has none."""
        leader = self._wire.leader(self._tp)
        if leader is None:
            return None
        request = wire.fetch_request({self._tp: offset}, self._fetch_bytes, self._fetch_bytes, max_wait_ms=0)
        sent = _Sent(offset)
        self._wire.send(leader, request).add_both(sent.answered)
        return sent


class _Sent:
    """A fetch under way; its answer is set on the wire's IO thread."""

    def __init__(self, offset: int):
        self.offset = offset
        self._done = threading.Event()
        self._answer = None

    def answered(self, answer) -> None:
        self._answer = answer
        self._done.set()

    def answer(self):
        """The response, or the exception that ended the request."""
        if not self._done.wait(FETCH_TIMEOUT_MS / 1000):
            return TimeoutError(f"no answer to a fetch within {FETCH_TIMEOUT_MS} ms")
        return self._answer
