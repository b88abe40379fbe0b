"""One partition's committed records, read in offset order without a consumer group.

`verify` walks a source partition and its copy side by side; holding either in memory
would not do for millions of records, so a PartitionLog keeps one fetch's records at a
time and hands out (offset, timestamp, fields, producer id) tuples, `fields` being the
record's key, value and headers as encoded (`batches.record_fields`). It reads as a
`read_committed` consumer does: no records of aborted transactions, no markers.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

from kafka.errors import OffsetOutOfRangeError

from . import batches, wire

FETCH_BYTES = 4 << 20
FETCH_TIMEOUT_MS = 30_000
LEADER_WAIT_SECONDS = 30.0

LogRecord = tuple[int, int, bytes, int]  # offset, timestamp, fields, producer id


class PartitionLog:
    """Reads one partition through a `wire.Wire` that tracks its topic."""

    def __init__(self, link: wire.Wire, tp, log_start: Callable[[], int], fetch_bytes: int = FETCH_BYTES):
        self._wire = link
        self._tp = tp
        self._log_start = log_start  # asked when a fetch finds its offset deleted
        self._fetch_bytes = fetch_bytes
        self._pending: deque[LogRecord] = deque()  # fetched, every readable record in [_at, _fetch_at)
        self._at = 0
        self._fetch_at = 0
        self._ended = False  # the last fetch found nothing more at _fetch_at
        self.fetches = 0

    def records(self, start: int, end: int) -> Iterator[LogRecord]:
        """The records with offsets in [start, end); read it to its end before the next call."""
        if not self._at <= start <= self._fetch_at:
            self._pending.clear()
            self._fetch_at = start
            self._ended = False
        pending = self._pending
        while pending and pending[0][0] < start:
            pending.popleft()
        self._at = start
        while True:
            if not pending:
                if self._fetch_at >= end or self._ended or not self._fetch():
                    self._at = max(self._at, min(end, self._fetch_at))
                    return
                continue
            record = pending[0]
            if record[0] >= end:
                self._at = end
                return
            pending.popleft()
            self._at = record[0] + 1
            yield record

    def _fetch(self) -> bool:
        """Fetch from `_fetch_at` on; False at the end of what can be read now."""
        fetched = self._answer()
        if fetched is None:
            return False
        found = batches.split(fetched.records)
        at, append = self._fetch_at, self._pending.append
        if not found or found[-1].next_offset <= at:
            self._ended = True
            return False
        for batch, readable in batches.readable(found, fetched.aborted):
            if readable and batch.next_offset > at:
                producer = batch.producer_id
                for offset, timestamp, fields in batches.record_fields(batch):
                    if offset >= at:
                        append((offset, timestamp, fields, producer))
        self._fetch_at = found[-1].next_offset
        return True

    def _answer(self) -> wire.FetchedPartition | None:
        """This partition's part of a fetch answer; None when its offset is past the log's end."""
        deadline = time.monotonic() + LEADER_WAIT_SECONDS
        while True:
            leader = self._wire.leader(self._tp)
            if leader is not None:
                request = wire.fetch_request({self._tp: self._fetch_at}, self._fetch_bytes,
                                             self._fetch_bytes, max_wait_ms=0)
                [answer] = self._wire.ask([(leader, request)], FETCH_TIMEOUT_MS)
                self.fetches += 1
                if not isinstance(answer, BaseException):
                    [fetched] = wire.fetched(answer)
                    if fetched.error is None:
                        return fetched
                    if fetched.error is OffsetOutOfRangeError:
                        start = self._log_start()
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
