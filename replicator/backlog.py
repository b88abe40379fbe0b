"""How far behind a direction is: per partition, in records and in seconds, owned or not.

Measured from the group's committed offsets and the source's log ends, not from a member's
position, so that a partition no member owns still shows its backlog. Its age is that of
the oldest record not yet copied: the first record a read_committed consumer would read
at the committed offset (past transaction markers, aborted records and compacted gaps).

One measure costs one OffsetFetch, one DescribeGroups, a ListOffsets per leader and, for
the partitions that lag only, fetches per leader that ask for PEEK_BYTES of each (a record
batch cut short still has its header, which carries its first timestamp), whatever the
partition count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition

from . import batches, link, wire
from .config import ReplicatorConfig
from .offsets import describe_group

log = logging.getLogger(__name__)

# Asked of each lagging partition: the first record's batch, or its header when it is larger.
PEEK_BYTES = 16 * 1024
# Asked of each leader in one fetch; partitions left out are asked again in the next round.
ROUND_BYTES = 8 * 1024 * 1024
ROUNDS = 4
TIMEOUT_MS = 10_000
METADATA_WAIT_SECONDS = 0.2
MEASURE_SECONDS = 10.0


@dataclass(frozen=True)
class PartitionBacklog:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    log_end: int
    records: int | None  # log end minus committed; None without a commit
    seconds: float | None  # age of the oldest record not copied, 0 when caught up; None: unknown
    owner: str | None


@dataclass(frozen=True)
class BacklogFigures:
    """One direction's backlog at one moment."""

    direction: str
    partitions: list[PartitionBacklog]
    at: float = field(default_factory=time.time)

    @property
    def ownerless(self) -> int:
        return sum(1 for p in self.partitions if p.owner is None)


@dataclass(frozen=True)
class Peeked:
    """What one fetch said of a partition: the timestamp of its first readable record at the
    asked offset, or where to ask next (past markers and aborted records), or neither."""

    timestamp: int | None = None
    next_offset: int | None = None


def peek(records: bytes, aborted: list[tuple[int, int]], offset: int) -> Peeked:
    """The first record a read_committed consumer reads at `offset` in one fetched record set."""
    skipped_to = None
    for batch, readable in batches.readable(batches.split(records, truncated=True), aborted):
        if batch.last_offset < offset:
            continue
        if not readable:
            if not batch.whole:
                break  # a marker cut short: asked again from its start
            skipped_to = batch.next_offset
            continue
        timestamp = batches.timestamp_at(batch, offset)
        if timestamp is not None:
            return Peeked(timestamp=timestamp)
        if not batch.whole:
            break
        skipped_to = batch.next_offset
    return Peeked(next_offset=skipped_to)


class Backlog:
    """Measures one direction's backlog; its clients of the source stay open until close()."""

    def __init__(self, config: ReplicatorConfig, direction: str):
        self._config = config
        self._direction = direction
        (self._side, self._cluster), _ = config.clusters(direction)
        settings = link.client_settings(self._cluster)
        self._admin = link.admin_client(self._side, self._cluster)
        self._consumer = None
        self._wire = None
        try:
            with link.reaching(self._side, self._cluster):
                self._consumer = KafkaConsumer(**settings, enable_auto_commit=False)
                self._wire = wire.Wire(settings, ROUND_BYTES + config.consumer.max_partition_fetch_bytes + 65536)
                self._wire.bootstrap(TIMEOUT_MS)
        except BaseException:
            self.close()
            raise

    def measure(self) -> BacklogFigures:
        rows = describe_group(self._config, self._direction, self._admin, self._consumer)
        lagging = {TopicPartition(r.topic, r.partition): r.committed for r in rows if r.lag}
        timestamps = self._oldest(lagging) if lagging else {}
        now_ms = time.time() * 1000.0
        partitions = []
        for row in rows:
            tp = TopicPartition(row.topic, row.partition)
            if row.lag == 0:
                seconds = 0.0
            elif tp in timestamps:
                seconds = max(0.0, now_ms - timestamps[tp]) / 1000.0
            else:
                seconds = None
            partitions.append(PartitionBacklog(row.topic, row.partition, row.committed, row.log_end,
                                               row.lag, seconds, row.owner))
        return BacklogFigures(self._direction, partitions, now_ms / 1000.0)

    def close(self) -> None:
        for client in (self._wire, self._consumer, self._admin):
            if client is not None:
                client.close()

    def _oldest(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp of the first readable record at each position, where one is found
        within ROUNDS fetches; an open transaction there, or an error, leaves it out."""
        self._wire.track({tp.topic for tp in positions})
        found: dict[TopicPartition, int] = {}
        asking = dict(positions)
        for _ in range(ROUNDS):
            by_leader: dict[int, dict[TopicPartition, int]] = {}
            for tp, offset in asking.items():
                by_leader.setdefault(self._wire.leader(tp), {})[tp] = offset
            if by_leader.pop(None, None):
                self._wire.refresh()  # a topic just tracked, or a leader moving
                time.sleep(METADATA_WAIT_SECONDS)
            calls = [(leader, wire.fetch_request(offsets, PEEK_BYTES, ROUND_BYTES, 0))
                     for leader, offsets in by_leader.items()]
            answers = self._wire.ask(calls, TIMEOUT_MS) if calls else []
            for answer in answers:
                if isinstance(answer, BaseException):
                    log.debug("%s: a backlog fetch failed: %s", self._direction, answer)
                    self._wire.refresh()
                    continue
                for part in wire.fetched(answer):
                    offset = asking.get(part.tp)
                    if offset is None:
                        continue
                    if part.error is not None:
                        log.debug("%s: %s[%d]: %s", self._direction, part.tp.topic, part.tp.partition,
                                  part.error.__name__)
                        if getattr(part.error, "retriable", False) or getattr(part.error, "invalid_metadata", False):
                            self._wire.refresh()
                        else:  # out of range (deleted upstream), say: its age is not known
                            del asking[part.tp]
                        continue
                    seen = peek(part.records, part.aborted, offset)
                    if seen.timestamp is not None:
                        found[part.tp] = seen.timestamp
                        del asking[part.tp]
                    elif seen.next_offset is not None:
                        asking[part.tp] = seen.next_offset
            if not asking:
                break
        return found
