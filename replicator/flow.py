"""A Flow: the running loop of one member of one direction.

consume from the source → produce to the target → commit what the target acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from . import link
from .checkpoint import Checkpoint, Failure, Rejected
from .config import ReplicatorConfig
from .errors import ConfigError, RecordRejected
from .metrics import FlowMetrics
from .provenance import Provenance
from .topics import Layout, TopicSync

log = logging.getLogger(__name__)

TOPIC_SYNC_SECONDS = 30.0
BACKOFF_SECONDS = 1.0


@dataclass
class Health:
    """What an operator (or a supervisor) probes."""

    direction: str
    member: str | None
    state: str = "starting"
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
        self._stopping = threading.Event()
        self._health = Health(direction, member)
        self._layouts: dict[str, Layout] = {}
        self._targets: dict[TopicPartition, tuple[str, int | None]] = {}
        self._stopped: dict[TopicPartition, RecordRejected] = {}
        self._backpressure = False
        self._max_in_flight = max(10_000, 20 * self._group.max_poll_records)
        self._next_commit = 0.0
        self._next_sync = 0.0
        self.source_consumer = None
        self.target_producer = None

    def run(self) -> None:
        """Replicate until stop() is called; commit what was acknowledged on the way out."""
        try:
            self._connect()
            self._health.state = "running"
            while not self._stopping.is_set():
                self._step()
        except BaseException as exc:
            self._health.state = "failed"
            self._health.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to finish; safe from any thread."""
        self._stopping.set()

    def health(self) -> Health:
        health = self._health
        health.in_flight = self._checkpoint.in_flight()
        health.stopped = {f"{tp.topic}[{tp.partition}]": str(err) for tp, err in self._stopped.items()}
        return health

    def _connect(self) -> None:
        (source_side, source), (target_side, target) = self.config.clusters(self.direction)
        source_admin = link.admin_client(source_side, source)
        target_admin = link.admin_client(target_side, target)
        with link.reaching(source_side, source):
            source_id = source_admin.describe_cluster()["cluster_id"]
        with link.reaching(target_side, target):
            target_id = target_admin.describe_cluster()["cluster_id"]
        self._provenance = Provenance(source_id, target_id)
        self._topic_sync = TopicSync(source_admin, target_admin, self._routes,
                                     manage=self._settings.create_topics)
        self._admins = (source_admin, target_admin)
        self._sync_topics()
        self.target_producer = link.target_producer(self.config, self.direction)
        self.source_consumer = link.source_consumer(self.config, self.direction, self.member)
        self.source_consumer.subscribe(list(self._routes), listener=_Rebalance(self))
        group = self._group
        log.info("%s %s: replicating %s from %s cluster %s to %s cluster %s, group %s",
                 self.direction, self.member or "-", self._routes, source_side, source_id,
                 target_side, target_id, group.group_id)
        log.info("%s: AUTO_OFFSET_RESET=%s (where the group has no committed offset)",
                 self.direction, self.config.offset_reset(self.direction))
        if group.enable_auto_commit:
            log.info("%s: Auto commit enabled: acknowledged offsets are committed every %d ms",
                     self.direction, group.auto_commit_interval_ms)
        else:
            log.info("%s: Auto commit disabled: each polled batch is flushed to the target and "
                     "its acknowledged offsets committed before the next poll", self.direction)

    def _step(self) -> None:
        records = self.source_consumer.poll(
            timeout_ms=self.config.consumer.poll_timeout_ms,
            max_records=self._group.max_poll_records,
        )
        self._health.last_poll = time.time()
        if records:
            self._send(records)
        if not self._group.enable_auto_commit and records:
            self._flush(self._group.max_poll_interval_ms / 2000.0)
            self._settle()
            self._commit()
        else:
            self._settle()
        now = time.monotonic()
        if now >= self._next_commit:
            self._next_commit = now + self._group.auto_commit_interval_ms / 1000.0
            self._commit()
            self._update_lag()
        if now >= self._next_sync:
            self._sync_topics()
        self._apply_backpressure()

    def _send(self, records: dict) -> None:
        send = self.target_producer.send
        forward = self._provenance.forward
        batches = list(records.items())
        for index, (tp, batch) in enumerate(batches):
            if tp in self._stopped:
                continue
            topic, partition = self._targets.get(tp) or self._target_for(tp)
            pending = self._checkpoint.pending(tp)
            track = pending.append
            sent = nbytes = loop_skipped = 0
            future = timestamp = None
            try:
                for record in batch:
                    headers = forward(record.headers)
                    if headers is None:
                        loop_skipped += 1
                        self._checkpoint.done(tp, record.offset)
                        continue
                    value = record.value
                    try:
                        future = send(topic, value, record.key, headers, partition, record.timestamp)
                    except KafkaTimeoutError:
                        raise
                    except (KafkaError, ValueError, TypeError) as exc:
                        future = Rejected(exc)
                    track((record.offset, future))
                    timestamp = record.timestamp
                    sent += 1
                    if value:
                        nbytes += len(value)
            except KafkaTimeoutError as exc:
                # The producer's buffer stayed full: the target is slow or down. What was
                # not handed to the producer is consumed again after a pause.
                log.warning("%s: target cluster not accepting records (%s); backing off %.0fs",
                            self.direction, exc, BACKOFF_SECONDS)
                self.source_consumer.seek(tp, record.offset)
                for later, rest in batches[index + 1:]:
                    self.source_consumer.seek(later, rest[0].offset)
                time.sleep(BACKOFF_SECONDS)
                return
            finally:
                self.metrics.sent(tp.topic, sent, nbytes, loop_skipped)
            if sent and not isinstance(future, Rejected):
                future.add_callback(self.metrics.acknowledged, timestamp)

    def _target_for(self, tp: TopicPartition) -> tuple[str, int | None]:
        layout = self._layouts.get(tp.topic)
        if layout is None or tp.partition >= layout.source_partitions:
            self._sync_topics()  # a topic or partition that appeared since the last sync
            layout = self._layouts.get(tp.topic)
        preserve = (
            self._settings.partitioning == "preserve"
            and layout is not None
            and layout.target_partitions >= layout.source_partitions
        )
        target = (self._routes[tp.topic], tp.partition if preserve else None)
        self._targets[tp] = target
        return target

    def _rewind(self, tp: TopicPartition) -> None:
        """Drop the partition's in-flight sends and consume again from the first of them."""
        offset = self._checkpoint.rewind(tp)
        if offset is not None:
            self.source_consumer.seek(tp, offset)

    def _settle(self) -> None:
        for failure in self._checkpoint.settle():
            self._handle(failure)

    def _handle(self, failure: Failure) -> None:
        tp, offset, error = failure.partition, failure.offset, failure.error
        if getattr(error, "retriable", False):
            log.warning("%s: %s[%d]@%d not acknowledged by the target (%s); consuming it again",
                        self.direction, tp.topic, tp.partition, offset, error)
            self.metrics.failed()
            self._rewind(tp)
            return
        reason = f"{type(error).__name__}: {error}"
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
        self.source_consumer.pause(tp)

    def _flush(self, timeout: float) -> None:
        try:
            self.target_producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            log.warning("%s: target cluster did not acknowledge all records within %.0fs; "
                        "the rest is committed once it does", self.direction, timeout)

    def _advance_idle(self) -> None:
        for tp in self.source_consumer.assignment():
            if tp not in self._stopped:
                position = link.fetch_position(self.source_consumer, tp)
                if position is not None:
                    self._checkpoint.advance(tp, position)

    def _commit(self) -> bool:
        """Commit the acknowledged positions; False if the group refused them for now."""
        self._advance_idle()
        positions = self._checkpoint.to_commit()
        if not positions:
            return True
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
        started = time.monotonic()
        try:
            self.source_consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("%s: commit failed during a rebalance (%s); the partitions' next owner "
                        "replays from the last commit, so some records may be duplicated",
                        self.direction, exc)
            return False
        except KafkaError as exc:
            log.warning("%s: commit failed (%s); retrying at the next commit", self.direction, exc)
            return False
        self._checkpoint.committed(positions)
        self.metrics.committed(time.monotonic() - started)
        return True

    def _update_lag(self) -> None:
        lag = {}
        for tp in self.source_consumer.assignment():
            end = self.source_consumer.highwater(tp)
            position = self._checkpoint.position(tp)
            if end is not None and position is not None:
                lag[f"{tp.topic}[{tp.partition}]"] = max(0, end - position)
        self.metrics.set_lag(lag)

    def _sync_topics(self) -> None:
        self._next_sync = time.monotonic() + TOPIC_SYNC_SECONDS
        layouts = self._topic_sync.sync()
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

    def _apply_backpressure(self) -> None:
        """Pause fetching while too many records wait for the target's acknowledgement."""
        in_flight = self._checkpoint.in_flight()
        assigned = self.source_consumer.assignment()
        if not self._backpressure and in_flight > self._max_in_flight and assigned:
            self._backpressure = True
            self.source_consumer.pause(*assigned)
        elif self._backpressure and in_flight <= self._max_in_flight // 2:
            self._backpressure = False
            resumable = [tp for tp in assigned if tp not in self._stopped]
            if resumable:
                self.source_consumer.resume(*resumable)

    def _shutdown(self) -> None:
        """Ordered: stop polling, flush the target, commit what it acknowledged, close."""
        self._health.state = "stopping" if self._health.state != "failed" else "failed"
        grace = self.config.shutdown_grace_period_seconds
        if self.target_producer is not None:
            self._flush(grace * 0.5)
        if self.source_consumer is not None:
            self._settle()
            self._final_commit(grace * 0.25)
            self.source_consumer.close(autocommit=False, timeout_ms=int(grace * 250))
        if self.target_producer is not None:
            self.target_producer.close(timeout=grace * 0.25)
        for admin in getattr(self, "_admins", ()):
            admin.close()
        if self._health.state != "failed":
            self._health.state = "stopped"
        log.info("%s %s: stopped", self.direction, self.member or "-")

    def _final_commit(self, seconds: float) -> None:
        """Commit on the way out; a rebalance under way is finished first, fetching nothing.

        Partitions are paused so that poll() returns no record: a record polled now
        would move the consumer's position past what was sent.
        """
        deadline = time.monotonic() + seconds
        while not self._commit() and time.monotonic() < deadline:
            assigned = self.source_consumer.assignment()
            if assigned:
                self.source_consumer.pause(*assigned)
            self.source_consumer.poll(timeout_ms=200)

    # Rebalance callbacks, called by the consumer while poll() runs.

    def _revoked(self, partitions) -> list:
        if not partitions:
            return []
        log.info("%s %s: rebalance: partitions revoked: %s", self.direction, self.member or "-",
                 _names(partitions))
        self._flush(min(10.0, self._group.session_timeout_ms / 3000.0))
        self._checkpoint.settle()
        positions = {tp: pos for tp, pos in self._checkpoint.to_commit().items() if tp in partitions}
        return positions

    def _forget(self, partitions) -> None:
        self._checkpoint.forget(partitions)
        for tp in partitions:
            self._stopped.pop(tp, None)
            self._targets.pop(tp, None)
        gone = set(_names(partitions))
        self._health.assigned = [name for name in self._health.assigned if name not in gone]

    def _assigned(self, partitions) -> None:
        self.metrics.rebalanced()
        assigned = sorted(self.source_consumer.assignment())
        self._health.assigned = _names(assigned)
        log.info("%s %s: partition assignment: added %s; now owns %s", self.direction,
                 self.member or "-", _names(partitions), _names(assigned))


def _names(partitions) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits acknowledged offsets of revoked partitions before they change hands.

    kafka-python runs listeners on its I/O thread, where the blocking commit() is
    not allowed; the coordinator's awaitable commit is what its own pre-rebalance
    auto-commit uses.
    """

    def __init__(self, flow: Flow):
        self._flow = flow

    async def on_partitions_revoked(self, revoked):
        flow = self._flow
        positions = flow._revoked(revoked)
        if positions:
            offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
            coordinator = flow.source_consumer._coordinator
            try:
                await coordinator._commit_offsets_sync_async(offsets, timeout_ms=10_000)
                flow._checkpoint.committed(positions)
                flow.metrics.committed(0.0)
            except KafkaError as exc:
                log.warning("%s: could not commit revoked partitions (%s); their next owner "
                            "may replay some records", flow.direction, exc)
        flow._forget(revoked)

    async def on_partitions_assigned(self, assigned):
        self._flow._assigned(assigned)

    async def on_partitions_lost(self, lost):
        log.warning("%s %s: rebalance: partitions lost (membership expired): %s; uncommitted "
                    "records on them will be replayed by their next owner",
                    self._flow.direction, self._flow.member or "-", _names(lost))
        self._flow._forget(lost)
