"""A Flow: the running loop of one member of one direction.

fetch batches from the source → ship them to the target → commit what the target acknowledged.

The consumer group decides which source partitions this member owns and holds the
committed positions; its consumer never fetches (every partition stays paused). The
data moves as record batches: fetched raw (`Fetcher`), turned into shipments
(`Shipper`), written idempotently (`BatchProducer`). Answers from both clusters come
back on their IO threads and are handled here, on the flow's own thread, in order.

With `exactlyOnce`, the writes go through `Transactions` instead: a commit first commits
each partition's transaction on the target (copies, spans and next offset together),
and a newly assigned partition resumes from the offset its last transaction committed.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from kafka import AsyncConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    OffsetOutOfRangeError,
    RebalanceInProgressError,
    TopicAuthorizationFailedError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from . import batches, link, map_topic, registry, wire
from .checkpoint import Checkpoint, Failure
from .config import ReplicatorConfig
from .errors import ClusterError, ConfigError, Fenced, RecordRejected
from .fetcher import Fetcher
from .metrics import FlowMetrics
from .offset_map import Journal
from .producer import BatchProducer, Shipment
from .provenance import Provenance
from .shipping import Shipper, Step, Target
from .topics import Layout, TopicSync
from .transactions import Transactions

log = logging.getLogger(__name__)

TOPIC_SYNC_SECONDS = 30.0
TOPIC_SYNC_RETRY_SECONDS = 5.0
FETCH_WAIT_MS = 100
# Below this a source batch is merged with its neighbours rather than copied: a copy
# costs a fixed few tens of µs per batch, a merge a few µs per record (BENCHMARKS.md).
MERGE_BELOW_BYTES = 4096
EVENT_WAIT_SECONDS = 0.05
GROUP_POLL_MS = 100
GROUP_POLL_INTERVAL_SECONDS = 0.2
# Commits wait while the group rebalances; a rebalance that lasts longer deserves a warning.
REBALANCE_PATIENCE_SECONDS = 60.0
CONNECT_TIMEOUT_MS = 15_000
TRANSACTIONAL_REQUESTS_PER_NODE = 64


class State(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class Health:
    """What an operator (or a supervisor) probes."""

    direction: str
    member: str | None
    state: str = State.STARTING.value
    assigned: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    last_poll: float = 0.0
    error: str | None = None


class Flow:
    def __init__(self, config: ReplicatorConfig, direction: str, member: str | None = None):
        self.config = config
        self.direction = direction
        self.member = member
        self.metrics = FlowMetrics()
        self._settings = config.direction(direction)
        self._group = config.group(direction)
        self._routes = {route.source_topic_name: route.target for route in self._settings.topics}
        self._checkpoint = Checkpoint()
        self._map: map_topic.MapWriter | None = None
        self._stopping = threading.Event()
        self._leave_group = False
        self._rejoin = threading.Event()
        self._health = Health(direction, member)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._layouts: dict[str, Layout] = {}
        self._targets: dict[TopicPartition, Target] = {}
        self._stopped: dict[TopicPartition, RecordRejected] = {}
        self._singles: dict[TopicPartition, int] = {}  # send one record per batch below this offset
        self._fallbacks_logged: set[tuple[TopicPartition, str]] = set()
        self._max_unacked_bytes = 2 * config.consumer.fetch_max_bytes
        self._next_commit = 0.0
        self._next_sync = 0.0
        self._next_group_poll = 0.0
        self._rebalancing_since: float | None = None
        self._evicted_since: float | None = None
        self._committed_at = 0.0  # the last commit that went through (or had nothing to do)
        self._commit_patience = max(5 * self._group.auto_commit_interval_ms,
                                    self._group.session_timeout_ms) / 1000
        self._overdue = False
        self._next_rebalance_warning = 0.0
        self._admins: tuple = ()
        self._topic_sync: TopicSync | None = None
        self._provenance: Provenance | None = None
        self._registry: registry.Registry | None = None
        self._source_wire: wire.Wire | None = None
        self._target_wire: wire.Wire | None = None
        self._fetcher: Fetcher | None = None
        self._shipper: Shipper | None = None
        self._transactions: Transactions | None = None
        self._resume_at: dict[TopicPartition, int] = {}  # exactly-once: positions read from the target
        self._source_id = ""
        self._target_settings: dict = {}
        self._failure: Exception | None = None  # met in a rebalance callback, raised by the loop
        self.source_consumer = None
        self.target_producer: BatchProducer | Transactions | None = None

    def run(self) -> None:
        """Replicate until stop() is called; commit what was acknowledged on the way out."""
        try:
            self._connect()
            self._committed_at = time.monotonic()
            self._health.state = State.RUNNING.value
            while not self._stopping.is_set():
                self._step()
        except BaseException as exc:
            self._health.state = State.FAILED.value
            self._health.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._shutdown()

    def stop(self, leave_group: bool = False) -> None:
        """Ask the loop to finish; safe from any thread. `leave_group`: this member is gone for
        good (scaled down), so its partitions go to the others now, not after a session."""
        self._leave_group = self._leave_group or leave_group
        self._stopping.set()

    def rejoin(self) -> None:
        """Ask the loop to join the group again, which makes the group rebalance; safe from any
        thread (the consumer is used on the loop's own)."""
        self._rejoin.set()

    def health(self) -> Health:
        health = self._health
        health.in_flight = self._checkpoint.in_flight()
        health.stopped = {f"{tp.topic}[{tp.partition}]": str(err) for tp, err in self._stopped.items()}
        return health

    # Start -----------------------------------------------------------------------------

    def _connect(self) -> None:
        (source_side, source), (target_side, target) = self.config.clusters(self.direction)
        source_admin = link.admin_client(source_side, source)
        target_admin = link.admin_client(target_side, target)
        self._admins = (source_admin, target_admin)
        with link.reaching(source_side, source):
            source_id = source_admin.describe_cluster()["cluster_id"]
            registry.ensure_topic(source_admin)
        with link.reaching(target_side, target):
            target_id = target_admin.describe_cluster()["cluster_id"]
            registry.ensure_topic(target_admin)
        self._provenance = Provenance(source_id, target_id)
        self._source_id = source_id
        journal = Journal(source_id)
        self._topic_sync = TopicSync(source_admin, target_admin, self._routes,
                                     manage=self._settings.create_topics)
        self._sync_topics()
        with link.reaching(target_side, target):
            map_topic.ensure_topic(target_admin,
                                   map_topic.longest_retention(source_admin, self._routes))

        source_settings, target_settings = link.client_settings(source), link.client_settings(target)
        self._target_settings = target_settings
        consumer = self.config.consumer
        with link.reaching(source_side, source):
            self._source_wire = wire.Wire(
                source_settings, consumer.fetch_max_bytes + consumer.max_partition_fetch_bytes + 65536)
            self._source_wire.bootstrap(CONNECT_TIMEOUT_MS)
        self._source_wire.track(self._routes)
        with link.reaching(target_side, target):
            # Exactly-once writes through a producer per source partition, five requests each.
            self._target_wire = wire.Wire(target_settings, 1 << 20, max_in_flight=(
                TRANSACTIONAL_REQUESTS_PER_NODE if self._settings.exactly_once else 5))
            self._target_wire.bootstrap(CONNECT_TIMEOUT_MS)
        self._target_wire.track(set(self._routes.values()) | {map_topic.TOPIC})
        self._registry = registry.Registry(source_settings)
        with link.reaching(source_side, source):
            self._registry.load()
        self._fetcher = Fetcher(self._source_wire, wire, consumer.max_partition_fetch_bytes,
                                consumer.fetch_max_bytes, FETCH_WAIT_MS)
        producer = self.config.producer
        self._shipper = Shipper(
            self._settings.mode, producer.compression_type, producer.batch_size,
            producer.max_request_size - 512, MERGE_BELOW_BYTES, self._registry.is_ours,
            self._provenance, self._fallback)
        with link.reaching(target_side, target):
            if self._settings.exactly_once:
                self._transactions = self.target_producer = Transactions(
                    self._target_wire, wire, self._group.group_id, source_id,
                    (target_side, target.bootstrap_servers), producer.max_request_size,
                    self._target_wire.request_timeout_ms, self._written,
                    lambda ids: registry.register(target_settings, ids, self.direction, self.member))
                self._transactions.check()
            else:
                self.target_producer = BatchProducer(
                    self._target_wire, wire, lambda: self._new_producer_id(target_settings),
                    producer.max_request_size, self._target_wire.request_timeout_ms, self._written)
        self._map = map_topic.MapWriter(journal, self.target_producer.submit, self._map_slow)
        self.source_consumer = link.source_consumer(self.config, self.direction, self.member)
        # Know the topics' partitions before joining: a group leader that assigns without
        # them gives out nothing, and may not notice when they arrive a moment later.
        for topic in self._routes:
            self.source_consumer.partitions_for_topic(topic)
        self.source_consumer.subscribe(list(self._routes), listener=_Rebalance(self))
        log.info("%s %s: replicating %s from %s cluster %s to %s cluster %s, group %s, mode %s",
                 self.direction, self.member or "-", self._routes, source_side, source_id,
                 target_side, target_id, self._group.group_id, self._settings.mode)
        log.info("%s: AUTO_OFFSET_RESET=%s (where the group has no committed offset)",
                 self.direction, self.config.offset_reset(self.direction))
        if self._transactions is not None:
            log.info("%s: exactly once: every %d ms the copies of each source partition and its "
                     "next offset are committed in one transaction on the %s cluster; consumers "
                     "of the target must read with isolation.level=read_committed to see each "
                     "record once", self.direction, self._group.auto_commit_interval_ms, target_side)
        elif self._group.enable_auto_commit:
            log.info("%s: Auto commit enabled: acknowledged offsets are committed every %d ms",
                     self.direction, self._group.auto_commit_interval_ms)
        else:
            log.info("%s: Auto commit disabled: acknowledged offsets are committed as soon as "
                     "the target acknowledges them", self.direction)

    def _new_producer_id(self, target_settings: dict) -> tuple[int, int]:
        producer_id, epoch = wire.init_producer_id(self._target_wire, CONNECT_TIMEOUT_MS)
        registry.register(target_settings, [producer_id], self.direction, self.member)
        log.info("%s %s: writing as producer id %d (registered in %s)", self.direction,
                 self.member or "-", producer_id, registry.TOPIC)
        return producer_id, epoch

    # The loop --------------------------------------------------------------------------

    def _step(self) -> None:
        if self._failure is not None:
            raise self._failure
        evicted = self._evicted()
        if self._rejoin.is_set():
            self._rejoin.clear()
            log.info("%s %s: joining group %s again, so that it rebalances", self.direction,
                     self.member or "-", self._group.group_id)
            wire.request_rejoin(self.source_consumer)
        busy = evicted or wire.group_needs_time(self.source_consumer)
        if busy or time.monotonic() >= self._next_group_poll:
            self._poll_group(busy)
        if (not evicted and not self._commits_overdue()
                and self.target_producer.unacknowledged_bytes < self._max_unacked_bytes):
            self._fetcher.pump(self._events.put)
        self.target_producer.pump(self._events.put)
        self._handle_events(EVENT_WAIT_SECONDS)
        settled = self._settle()
        now = time.monotonic()
        mapped = self._map.writing and self._map.done()
        if mapped or (settled and not self._group.enable_auto_commit) or now >= self._next_commit:
            self._next_commit = now + self._group.auto_commit_interval_ms / 1000.0
            self._commit()
            self._update_lag()
        if now >= self._next_sync:
            self._sync_topics()

    def _poll_group(self, busy: bool) -> None:
        # Heartbeats run on the consumer's own thread; a poll only has to take what the
        # group decided (a join, an assignment), and costs about a millisecond even idle.
        polled = self.source_consumer.poll(timeout_ms=GROUP_POLL_MS if busy else 0)
        self._next_group_poll = time.monotonic() + GROUP_POLL_INTERVAL_SECONDS
        self._health.last_poll = time.time()
        self._adopt(polled)

    def _adopt(self, polled: dict) -> None:
        """Start fetching newly assigned partitions from the group's position."""
        assigned = self.source_consumer.assignment()
        owned = set(self._fetcher.owned())
        new = [tp for tp in assigned if tp not in owned and tp not in self._stopped]
        if new and self._transactions is not None:
            self._take_over(new)
        for tp in new:
            position = self._resume_at.pop(tp, None)
            if position is None:
                position = wire.fetch_position(self.source_consumer, tp)
                early = polled.get(tp)
                if early:  # fetched before the pause took effect: start where that fetch began
                    position = early[0].offset if position is None else min(position, early[0].offset)
            if position is not None:
                self._fetcher.assign(tp, position)
                self._checkpoint.advance(tp, position)
        gone = owned - set(assigned)
        if gone:
            self.forget(gone)

    def _take_over(self, partitions: list[TopicPartition]) -> None:
        """Exactly-once: fence the partitions' earlier owners, then read where they stopped."""
        fresh = [tp for tp in partitions if not self._transactions.owns(tp)]
        if not fresh:
            return
        self._transactions.own(fresh)
        found = map_topic.positions(self._target_settings, self._group.group_id, self._source_id, fresh)
        self._resume_at.update(found)
        if found:
            log.info("%s %s: resuming from the positions committed on the target: %s", self.direction,
                     self.member or "-", ", ".join(f"{tp.topic}[{tp.partition}]@{offset}"
                                                   for tp, offset in sorted(found.items())))

    def _handle_events(self, wait: float, take_fetched: bool = True) -> None:
        """Every answer waiting (after up to `wait` s for the first); fetched data not taken
        is dropped and fetched again later from the same position."""
        try:
            event = self._events.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            owner, node, payload, answer = event
            if owner is self._fetcher:
                if take_fetched:
                    self._fetched(node, payload, answer)
                else:
                    self._fetcher.discard(node)
            else:
                for delivery in owner.answered(node, payload, answer):
                    if delivery.timestamp is not None:  # None: a write of the offset map
                        self.metrics.acknowledged(delivery.timestamp)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _evicted(self) -> bool:
        """No heartbeat answer for a session: the partitions are most likely someone else's now,
        and what this member would fetch and write, they copy too. It stays so until a heartbeat
        is answered again: kafka-python restarts its session clock as soon as it finds the
        coordinator again, a second before a heartbeat tells it that the group dropped it."""
        consumer = self.source_consumer
        if self._evicted_since is None:
            if wire.session_expired(consumer):
                self._evicted_since = time.monotonic()
                log.warning("%s %s: no heartbeat answer from group %s for sessionTimeoutMs (%d ms): "
                            "the group has most likely dropped this member (a paused process?); "
                            "nothing is fetched or written until a heartbeat is answered", self.direction,
                            self.member or "-", self._group.group_id, self._group.session_timeout_ms)
        elif wire.heartbeat_answered_since(consumer, self._evicted_since):
            self._evicted_since = None
            log.info("%s %s: heartbeats answered again", self.direction, self.member or "-")
        return self._evicted_since is not None

    def _commits_overdue(self) -> bool:
        """No commit for max(5 commit intervals, a session): the group coordinator is out of
        reach, or a rebalance does not end. Fetching waits for a commit to go through, so that
        what the partitions' next owner may copy again stays bounded. (Exactly once: the
        transactions bound it.)"""
        if self._transactions is not None:
            return False
        # Nothing acknowledged waiting: a loop held up (in a long join, say) has nothing to replay.
        overdue = (time.monotonic() - self._committed_at > self._commit_patience
                   and bool(self._checkpoint.to_commit()))
        if overdue != self._overdue:
            self._overdue = overdue
            if overdue:
                log.warning("%s %s: no commit went through for %.0fs; nothing more is fetched until "
                            "one does, so that a replay from the last commit stays short",
                            self.direction, self.member or "-", self._commit_patience)
            else:
                log.info("%s %s: commits go through again", self.direction, self.member or "-")
        return overdue

    def _fetched(self, node, sent: dict, answer) -> None:
        if self._evicted():
            self._fetcher.discard(node)  # read again from the same positions, if still ours
            return
        for part in self._fetcher.answered(node, sent, answer):
            tp = part.tp
            if part.error is not None:
                self._fetch_failed(tp, part.error)
                continue
            fetched = batches.split(part.records)
            if not fetched:
                continue
            steps = self._shipper.plan(tp, self._targets.get(tp) or self._target_for(tp),
                                       part.position, fetched, part.aborted,
                                       self._singles.get(tp, -1))
            self._stage(tp, steps)
            self._fetcher.advance(tp, fetched[-1].next_offset)

    def _stage(self, tp: TopicPartition, steps: list[Step]) -> None:
        checkpoint, submit, metrics = self._checkpoint, self.target_producer.submit, self.metrics
        for step in steps:
            if step.shipments:
                checkpoint.pending(tp).append((step.first, step.next, step.delivery))
                for shipment in step.shipments:
                    submit(shipment)
            else:
                checkpoint.done(tp, step.first, step.next)
            metrics.shipped(tp.topic, step.how, step.records, step.bytes, step.loop_skipped)

    def _fetch_failed(self, tp: TopicPartition, error: type) -> None:
        if error is OffsetOutOfRangeError:
            reset = self.config.offset_reset(self.direction)
            ends = (self.source_consumer.beginning_offsets if reset == "earliest"
                    else self.source_consumer.end_offsets)([tp])
            log.warning("%s: %s[%d]@%d is out of the source log's range (deleted by retention?); "
                        "restarting at the %s offset %d", self.direction, tp.topic, tp.partition,
                        self._fetcher.position(tp), reset, ends[tp])
            self._checkpoint.rewind(tp)
            self._fetcher.seek(tp, ends[tp])
            self._checkpoint.advance(tp, ends[tp])
            return
        if error is TopicAuthorizationFailedError:
            side = self.config.clusters(self.direction)[0]
            raise ClusterError(side[0], side[1].bootstrap_servers,
                               f"not authorized to read topic {tp.topic!r}; grant the replicator's "
                               "principal Read on it")
        log.warning("%s: fetching %s[%d] failed (%s); trying again", self.direction, tp.topic,
                    tp.partition, error.__name__)

    def _fallback(self, tp: TopicPartition, reason: str) -> None:
        if (tp, reason) not in self._fallbacks_logged:
            self._fallbacks_logged.add((tp, reason))
            log.info("%s: %s[%d]: records re-encoded instead of copied as a batch: %s",
                     self.direction, tp.topic, tp.partition, reason)

    def _target_for(self, tp: TopicPartition) -> Target:
        layout = self._layouts.get(tp.topic)
        if layout is None or tp.partition >= layout.source_partitions:
            self._sync_topics()  # a topic or partition that appeared since the last sync
            layout = self._layouts.get(tp.topic) or Layout(tp.partition + 1, tp.partition + 1)
        preserve = (self._settings.partitioning == "preserve"
                    and layout.target_partitions >= layout.source_partitions)
        target = Target(self._routes[tp.topic], layout.target_partitions,
                        tp.partition if preserve else None)
        self._targets[tp] = target
        return target

    # Acknowledgements, failures, commits ----------------------------------------------

    def _settle(self) -> bool:
        """Advance past what the target acknowledged; True if a position moved."""
        before = self._checkpoint.in_flight()
        for failure in self._checkpoint.settle():
            self._handle(failure)
        return self._checkpoint.in_flight() != before

    def _rewind(self, tp: TopicPartition) -> None:
        """Drop the partition's in-flight writes and fetch again from the first of them."""
        offset = self._checkpoint.rewind(tp)
        if offset is not None:
            self._fetcher.seek(tp, offset)

    def _handle(self, failure: Failure) -> None:
        tp, offset, error = failure.partition, failure.offset, failure.error
        if getattr(error, "retriable", False):
            log.warning("%s: %s[%d]@%d not acknowledged by the target (%s); fetching it again",
                        self.direction, tp.topic, tp.partition, offset, type(error).__name__)
            self.metrics.failed()
            self._rewind(tp)
            return
        reason = f"{type(error).__name__}: {error}"
        if self._singles.get(tp, -1) <= offset:
            # A whole batch was refused: find the record, so that onError applies to it alone.
            log.warning("%s: the target refused %s[%d]@%d-%d (%s); sending those records one "
                        "per batch to find the one it refuses", self.direction, tp.topic,
                        tp.partition, offset, failure.next_offset - 1, reason)
            self._singles[tp] = failure.next_offset
            self._rewind(tp)
            return
        if self._settings.on_error == "skip":
            log.error("%s: skipping %s[%d]@%d, rejected by the target: %s (onError: skip)",
                      self.direction, tp.topic, tp.partition, offset, reason)
            self.metrics.skipped(tp.topic)
            self._checkpoint.skip_failed(tp)
            self._settle()
            return
        rejected = RecordRejected(tp.topic, tp.partition, offset, reason)
        log.error("%s: %s", self.direction, rejected)
        self.metrics.failed()
        self._stopped[tp] = rejected
        self._checkpoint.rewind(tp)
        self._fetcher.pause(tp)

    def _drain(self, seconds: float, partitions=None) -> bool:
        """Wait for the target's answers (for `partitions`, or all); True if none is missing."""
        return self._wait(lambda: not self._checkpoint.in_flight(partitions), seconds)

    def _wait(self, done, seconds: float, take_fetched: bool = False) -> bool:
        """Handle answers, fetching nothing new, until `done()`; fetched data is dropped (read
        again later) unless taken."""
        deadline = time.monotonic() + seconds
        while True:
            if done() or time.monotonic() >= deadline:
                return done()
            self.target_producer.pump(self._events.put)
            self._handle_events(EVENT_WAIT_SECONDS, take_fetched)
            self._settle()

    def _advance_idle(self) -> None:
        for tp in self._fetcher.owned():
            if tp not in self._stopped:
                self._checkpoint.advance(tp, self._fetcher.position(tp))

    # The offset map: spans are journaled as the target acknowledges them, and written
    # to the map topic before the source offsets they cover are committed.

    def _written(self, shipment: Shipment) -> None:
        self._map.written(shipment)
        if shipment.offset < 0:
            log.warning("%s: the target did not say where it wrote %s[%d]@%d; the offset map "
                        "cannot translate those offsets", self.direction, shipment.origin.topic,
                        shipment.origin.partition, shipment.runs[0][0])

    def _map_slow(self, waited: float) -> None:
        log.warning("%s: the offset map topic %r has not acknowledged a write for %.0fs, so nothing "
                    "is committed; check that it exists on the %s cluster and that its leader is up",
                    self.direction, map_topic.TOPIC, waited, self.config.clusters(self.direction)[1][0])

    def _ready_to_commit(self) -> dict | None:
        """Acknowledged positions whose spans the map topic holds; None while it is written."""
        if not self._map.writing:
            self._map.start(self._checkpoint.to_commit())
        try:
            return self._map.ready()
        except map_topic.MapWriteRefused as refused:
            side, cluster = self.config.clusters(self.direction)[1]
            raise ClusterError(side, cluster.bootstrap_servers,
                               f"could not write the offset map topic {map_topic.TOPIC!r} "
                               f"({refused}); grant the replicator's principal Write on it") from None

    def _flush_map(self, seconds: float) -> dict:
        """Write the map now; the positions it covers ({} if the target did not answer)."""
        if self._map.writing:
            if not self._wait(self._map.done, seconds / 2):
                return {}
            self._ready_to_commit()  # takes the finished write; raises if it failed
        self._map.start(self._checkpoint.to_commit())
        if not self._wait(self._map.done, seconds / 2):
            return {}
        return self._ready_to_commit()

    def _transact(self, seconds: float, take_fetched: bool = True) -> dict | None:
        """Exactly-once: commit the open transactions; return the positions the source group may
        now get (None while some copies are not acknowledged).

        The fetches under way are taken (not fetched again) and everything written is awaited
        first: a transaction commits what the target acknowledged, and positions after it."""
        transactions = self._transactions
        if transactions.open():
            def settled() -> bool:
                return not self._checkpoint.in_flight() and not self._fetcher.waiting

            if not self._wait(settled, seconds, take_fetched):
                return None
            delivery = transactions.prepare(self._checkpoint.to_commit(), self._map.journal)
            if delivery is not None:
                if not self._wait(lambda: delivery.is_done, seconds) or delivery.exception is not None:
                    side, cluster = self.config.clusters(self.direction)[1]
                    problem = (f"refused ({type(delivery.exception).__name__}); grant the replicator's "
                               "principal Write on it" if delivery.exception is not None
                               else f"not acknowledged within {seconds:.0f}s")
                    raise ClusterError(side, cluster.bootstrap_servers,
                                       f"a transaction's positions for the offset map topic "
                                       f"{map_topic.TOPIC!r} were {problem}")
            transactions.commit()
        return transactions.committed(self._checkpoint.to_commit())

    def _commit(self, report=log.warning) -> bool:
        """Commit the acknowledged positions; False if the group refused them for now."""
        self._advance_idle()
        if self._transactions is not None:
            positions = self._transact(self._target_wire.request_timeout_ms / 1000)
        else:
            positions = self._ready_to_commit()
        if positions is None:
            return False
        if not positions:
            self._committed_at = time.monotonic()
            return True
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
        started = time.monotonic()
        try:
            self.source_consumer.commit(offsets)
        except RebalanceInProgressError:
            self._commit_waits()
            return False
        except CommitFailedError as exc:
            report("%s: commit failed during a rebalance (%s); the partitions' next owner "
                        "replays from the last commit, so some records may be duplicated",
                        self.direction, exc)
            return False
        except KafkaError as exc:
            report("%s: commit failed (%s); retrying at the next commit", self.direction, exc)
            return False
        self._checkpoint.committed(positions)
        self._committed_at = time.monotonic()
        self.metrics.committed(time.monotonic() - started)
        self._rebalancing_since = None
        if not self._group.enable_auto_commit and self._checkpoint.to_commit():
            self._map.start(self._checkpoint.to_commit())  # acknowledged during the last write
        return True

    def _commit_waits(self) -> None:
        """A commit refused while the group rebalances is normal; one refused for long is not."""
        now = time.monotonic()
        if self._rebalancing_since is None:
            self._rebalancing_since = now
            self._next_rebalance_warning = now + REBALANCE_PATIENCE_SECONDS
            log.info("%s: group %s is rebalancing; acknowledged offsets are committed once it "
                     "settles", self.direction, self._group.group_id)
        elif now >= self._next_rebalance_warning:
            self._next_rebalance_warning = now + REBALANCE_PATIENCE_SECONDS
            log.warning("%s: group %s has been rebalancing for %.0fs, so nothing is committed; "
                        "check its members with kafka-consumer-groups.sh --describe --members "
                        "--group %s", self.direction, self._group.group_id,
                        now - self._rebalancing_since, self._group.group_id)

    def _update_lag(self) -> None:
        lag = {}
        for tp, end in self._fetcher.high_watermarks.items():
            position = self._checkpoint.position(tp)
            if position is not None:
                lag[f"{tp.topic}[{tp.partition}]"] = max(0, end - position)
        self.metrics.set_lag(lag)

    def _sync_topics(self) -> None:
        self._next_sync = time.monotonic() + TOPIC_SYNC_SECONDS
        try:
            layouts = self._topic_sync.sync()
        except KafkaError as exc:
            # A broker restarting, say: the copy goes on with the topics as last seen.
            self._next_sync = time.monotonic() + TOPIC_SYNC_RETRY_SECONDS
            log.warning("%s: topic sync failed (%s: %s); trying again in %.0fs", self.direction,
                        type(exc).__name__, exc, TOPIC_SYNC_RETRY_SECONDS)
            return
        for source, layout in layouts.items():
            target = self._routes[source]
            if layout.target_partitions == 0:
                raise ConfigError(
                    f"target topic {target!r} does not exist on the "
                    f"{self.config.clusters(self.direction)[1][0]} cluster and "
                    f"replication.{self.direction}.createTopics is false; create it or set "
                    "createTopics: true"
                )
            narrower = layout.target_partitions < layout.source_partitions
            if narrower and self._settings.partitioning == "preserve" and layout != self._layouts.get(source):
                log.warning("%s: target topic %r has %d partitions, fewer than the %d of %r; "
                            "its records are partitioned by key hash, not by source partition",
                            self.direction, target, layout.target_partitions,
                            layout.source_partitions, source)
        if layouts != self._layouts:
            self._layouts = layouts
            self._targets.clear()

    # Stop ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Ordered: stop fetching, wait for the target's answers, commit them, close."""
        if self._health.state != State.FAILED.value:
            self._health.state = State.STOPPING.value
        grace = self.config.shutdown_grace_period_seconds
        if self.target_producer is not None:
            if not self._drain(grace * 0.5):
                log.warning("%s: the target did not acknowledge everything within %.0fs; the "
                            "rest is replayed by the partitions' next owner", self.direction,
                            grace * 0.5)
        if self.source_consumer is not None:
            self._settle()
            self._final_commit(grace * 0.25)
            if self._transactions is not None:
                self._transactions.release()
            if self._leave_group:
                wire.leave_on_close(self.source_consumer)
            self.source_consumer.close(autocommit=False, timeout_ms=int(grace * 250))
        for closable in (self._source_wire, self._target_wire, self._registry, *self._admins):
            if closable is not None:
                closable.close()
        if self._health.state != State.FAILED.value:
            self._health.state = State.STOPPED.value
        log.info("%s %s: stopped", self.direction, self.member or "-")

    def _final_commit(self, seconds: float) -> None:
        """Commit on the way out; a rebalance under way is finished first (nothing is fetched)."""
        deadline = time.monotonic() + seconds
        report = log.warning
        # A commit may cover what was mapped before the last answers came: go on until all is.
        while (not self._commit(report) or self._checkpoint.to_commit()) and time.monotonic() < deadline:
            report = log.debug  # the first refusal said it all
            if self._map.writing:
                self._wait(self._map.done, 0.2)
            else:
                self.source_consumer.poll(timeout_ms=200)

    # Rebalance callbacks: the consumer runs them on its IO thread while the flow's own
    # thread waits in poll() (a JoinGroup in flight goes on between polls, but the
    # callbacks run only once poll() takes its answer), so they never run beside the loop.

    def revoked(self, partitions) -> dict:
        """Wait for the target's answers on revoked partitions; return what to commit."""
        log.info("%s %s: rebalance: partitions revoked: %s", self.direction, self.member or "-",
                 _names(partitions))
        patience = min(10.0, self._group.session_timeout_ms / 3000.0)
        self._drain(patience, set(partitions))
        self._advance_idle()
        try:
            if self._transactions is not None:
                positions = self._transact(patience, take_fetched=False) or {}
            else:
                positions = self._flush_map(patience)
        except (ClusterError, Fenced) as exc:
            log.error("%s: %s; the revoked partitions are not committed", self.direction, exc)
            if self._transactions is not None:
                self._failure = exc  # the transactions' state is unknown: start again
            return {}
        return {tp: pos for tp, pos in positions.items() if tp in partitions}

    def committed(self, positions: dict) -> None:
        self._checkpoint.committed(positions)
        self._committed_at = time.monotonic()
        self.metrics.committed(0.0)

    def assigned(self, partitions) -> None:
        self.source_consumer.pause(*partitions)  # this member fetches them itself
        self.metrics.rebalanced()
        assigned = sorted(self.source_consumer.assignment())
        self._health.assigned = _names(assigned)
        log.info("%s %s: partition assignment: added %s; now owns %s", self.direction,
                 self.member or "-", _names(partitions), _names(assigned))

    def forget(self, partitions) -> None:
        if self._transactions is not None:
            self._transactions.release(partitions)
        for tp in partitions:
            self._resume_at.pop(tp, None)
        self._checkpoint.forget(partitions)
        self._map.forget(partitions)
        self._fetcher.forget(partitions)
        for tp in partitions:
            self._stopped.pop(tp, None)
            self._targets.pop(tp, None)
            self._singles.pop(tp, None)
        gone = set(_names(partitions))
        self._health.assigned = [name for name in self._health.assigned if name not in gone]


def _names(partitions) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits acknowledged offsets of revoked partitions before they change hands."""

    def __init__(self, flow: Flow):
        self._flow = flow

    async def on_partitions_revoked(self, revoked):
        flow = self._flow
        if not revoked:
            return
        positions = flow.revoked(revoked)
        if positions:
            try:
                await wire.commit_in_listener(flow.source_consumer, positions, timeout_ms=10_000)
                flow.committed(positions)
            except KafkaError as exc:
                log.warning("%s: could not commit revoked partitions (%s); their next owner "
                            "may replay some records", flow.direction, exc)
        flow.forget(revoked)

    async def on_partitions_assigned(self, assigned):
        self._flow.assigned(assigned)

    async def on_partitions_lost(self, lost):
        log.warning("%s %s: rebalance: partitions lost (membership expired): %s; uncommitted "
                    "records on them will be replayed by their next owner",
                    self._flow.direction, self._flow.member or "-", _names(lost))
        self._flow.forget(lost)
