"""A Flow's place in its consumer group: the group's KafkaConsumer, owned here.

The group decides which source partitions the member owns and keeps their committed
positions; its consumer never fetches (every partition it is given is paused at once,
the Fetcher reads them). The consumer is created, patched, polled, committed to and
closed here, and kafka-python's internals are reached only from here and
replicator.wire: the Flow holds a GroupMember, never a KafkaConsumer.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition

from . import link, wire
from .config import ReplicatorConfig

log = logging.getLogger(__name__)

ASSIGNORS = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}
LISTENER_COMMIT_TIMEOUT_MS = 10_000
# kafka-python retries a retriable refusal until this is up (its default: request_timeout_ms, 5 min),
# e.g. for a topic deleted at the source since the last fetch; the Flow tries again at its next commit.
COMMIT_TIMEOUT_MS = 10_000
POSITIONS_CHECK_SECONDS = 0.2


def source_consumer(config: ReplicatorConfig, direction: str, member: str | None) -> KafkaConsumer:
    """A group member reading the direction's source topics, committed data only."""
    (side, cluster), _ = config.clusters(direction)
    group = config.group(direction)
    with link.reaching(side, cluster):
        consumer = KafkaConsumer(
            **link.client_settings(cluster),
            group_id=group.group_id,
            group_instance_id=member,
            enable_auto_commit=False,
            auto_offset_reset=config.offset_reset(direction),
            isolation_level="read_committed",
            session_timeout_ms=group.session_timeout_ms,
            heartbeat_interval_ms=group.heartbeat_interval_ms,
            max_poll_records=group.max_poll_records,
            max_poll_interval_ms=group.max_poll_interval_ms,
            partition_assignment_strategy=(ASSIGNORS[group.partition_assignment_strategy],),
            fetch_max_bytes=config.consumer.fetch_max_bytes,
            max_partition_fetch_bytes=config.consumer.max_partition_fetch_bytes,
        )
    wire.complete_joins(consumer)
    return consumer


class Listener(Protocol):
    """What the member tells its Flow of a rebalance, on the consumer's IO thread while the
    Flow's own thread waits in poll(): the two never run side by side."""

    def revoked(self, partitions) -> dict:
        """Wait for the target's answers on these partitions; return what to commit."""

    def committed(self, positions: dict) -> None: ...

    def assigned(self, added: list, owned: list) -> None: ...

    def rebalanced(self, generation: int, owned: list) -> None:
        """A join completed (every rebalance the member lives through), changed or not."""

    def forget(self, partitions) -> None:
        """The partitions are someone else's now (revoked, or lost with the membership)."""


class Refused(enum.Enum):
    REBALANCING = "rebalancing"  # normal while the group rebalances: commit once it settles
    MOVED = "moved"  # refused in a rebalance: the partitions' next owner replays from the last commit
    FAILED = "failed"  # the coordinator out of reach, say: try again at the next commit


@dataclass(frozen=True)
class Refusal:
    """Why the group did not take a commit."""

    kind: Refused
    reason: str


class GroupMember:
    """One member of a direction's consumer group (a static one if `member` is set)."""

    def __init__(self, consumer: KafkaConsumer, topics: list[str], direction: str,
                 member: str | None, group_id: str, session_timeout_ms: int):
        self._consumer = consumer
        self._topics = topics
        self._label = f"{direction} {member or '-'}"
        self._direction = direction
        self._group_id = group_id
        self._session_timeout_ms = session_timeout_ms
        self._evicted_since: float | None = None
        self._leave = False
        self._listener: _Rebalance | None = None
        self._positions_missing = False
        self._next_positions_check = 0.0

    def join(self, listener: Listener) -> None:
        """Join the group; with no topics yet (patterns that match none), once `follow` gives some."""
        self._listener = _Rebalance(self._consumer, self._label, self._direction, listener)
        wire.on_join_complete(self._consumer, lambda generation: listener.rebalanced(
            generation, sorted(self._consumer.assignment())))
        if self._topics:
            self._subscribe()

    def follow(self, topics: list[str]) -> None:
        """Copy these topics from now on: the group rebalances, and the partitions of a topic
        left out are revoked through the listener (their acknowledged offsets committed).
        An empty list keeps the last one: unsubscribing would drop the partitions unannounced,
        and the topics left are deleted ones, which the group assigns no more."""
        if not topics or set(topics) == set(self._topics) and self._joined:
            return
        self._topics = list(topics)
        if self._listener is not None:
            self._subscribe()

    def _subscribe(self) -> None:
        # Know the topics' partitions before joining: a group leader that assigns without
        # them gives out nothing, and may not notice when they arrive a moment later.
        for topic in self._topics:
            self._consumer.partitions_for_topic(topic)
        self._consumer.subscribe(self._topics, listener=self._listener)
        wire.track_subscription_only(self._consumer)

    @property
    def _joined(self) -> bool:
        return bool(self._consumer.subscription())

    def topics_grew(self) -> None:
        """Source topics have new partitions: the group assigns them once its leader's
        metadata shows them, so that is refreshed now."""
        if self._joined:
            wire.refresh_group_metadata(self._consumer)

    def needs_time(self) -> bool:
        """Whether a poll must wait for group work (a join, finding the coordinator, positions
        to resolve). Positions are looked at every POSITIONS_CHECK_SECONDS while all are
        known: the look walks every assigned partition, and the loop asks at every round."""
        if not self._joined:
            return False
        if wire.group_needs_time(self._consumer):
            return True
        now = time.monotonic()
        if self._positions_missing or now >= self._next_positions_check:
            self._next_positions_check = now + POSITIONS_CHECK_SECONDS
            self._positions_missing = wire.positions_missing(self._consumer)
        return self._positions_missing

    def poll(self, timeout_ms: int) -> dict[TopicPartition, int]:
        """Take what the group decided (callbacks run in here); per partition fetched before
        its pause took effect, the first offset that fetch returned."""
        if not self._joined:
            return {}
        polled = self._consumer.poll(timeout_ms=timeout_ms)
        return {tp: records[0].offset for tp, records in polled.items() if records}

    def assignment(self) -> set[TopicPartition]:
        return self._consumer.assignment()

    def position(self, tp: TopicPartition) -> int | None:
        """Where the group says to start in an assigned partition, if known yet."""
        return wire.fetch_position(self._consumer, tp)

    def reset_offset(self, tp: TopicPartition, reset: str) -> int:
        """The log's first ("earliest") or next ("latest") offset."""
        ends = (self._consumer.beginning_offsets if reset == "earliest" else self._consumer.end_offsets)([tp])
        return ends[tp]

    def evicted(self) -> bool:
        """No heartbeat answer for a session: the partitions are most likely someone else's now,
        and what this member would fetch and write, they copy too. It stays so until a heartbeat
        is answered again: kafka-python restarts its session clock as soon as it finds the
        coordinator again, a second before a heartbeat tells it that the group dropped it."""
        if self._evicted_since is None:
            if self._joined and wire.session_expired(self._consumer):
                self._evicted_since = time.monotonic()
                log.warning("%s: no heartbeat answer from group %s for sessionTimeoutMs (%d ms): "
                            "the group has most likely dropped this member (a paused process?); "
                            "nothing is fetched or written until a heartbeat is answered",
                            self._label, self._group_id, self._session_timeout_ms)
        elif wire.heartbeat_answered_since(self._consumer, self._evicted_since):
            self._evicted_since = None
            log.info("%s: heartbeats answered again", self._label)
        return self._evicted_since is not None

    def rejoin(self) -> None:
        """Join the group again at the next poll, which makes the group rebalance."""
        log.info("%s: joining group %s again, so that it rebalances", self._label, self._group_id)
        wire.request_rejoin(self._consumer)

    def commit(self, positions: dict[TopicPartition, int]) -> Refusal | None:
        """Commit these next offsets; None once the group took them."""
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()},
                                  timeout_ms=COMMIT_TIMEOUT_MS)
        except RebalanceInProgressError as exc:
            return Refusal(Refused.REBALANCING, str(exc))
        except CommitFailedError as exc:
            return Refusal(Refused.MOVED, str(exc))
        except KafkaError as exc:
            return Refusal(Refused.FAILED, str(exc))
        return None

    def leave_on_close(self) -> None:
        """This member is gone for good (scaled down): its partitions go to the others at once."""
        self._leave = True

    def close(self, timeout_ms: int | None = None) -> None:
        if self._leave:
            wire.leave_on_close(self._consumer)
        self._consumer.close(autocommit=False, timeout_ms=timeout_ms)


def _names(partitions) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits acknowledged offsets of revoked partitions before they change hands."""

    def __init__(self, consumer: KafkaConsumer, label: str, direction: str, listener: Listener):
        self._consumer = consumer
        self._label = label
        self._direction = direction
        self._listener = listener

    async def on_partitions_revoked(self, revoked):
        if not revoked:
            return
        positions = self._listener.revoked(revoked)
        if positions:
            try:
                # commit() would deadlock here, on the consumer's own IO thread.
                await wire.commit_in_listener(self._consumer, positions, timeout_ms=LISTENER_COMMIT_TIMEOUT_MS)
                self._listener.committed(positions)
            except KafkaError as exc:
                log.warning("%s: could not commit revoked partitions (%s); their next owner "
                            "may replay some records", self._direction, exc)
        self._listener.forget(revoked)

    async def on_partitions_assigned(self, assigned):
        self._consumer.pause(*assigned)  # the Fetcher reads them
        self._listener.assigned(sorted(assigned), sorted(self._consumer.assignment()))

    async def on_partitions_lost(self, lost):
        log.warning("%s: rebalance: partitions lost (membership expired): %s; uncommitted "
                    "records on them will be replayed by their next owner", self._label, _names(lost))
        self._listener.forget(lost)
