"""A Flow: the running loop of one member of one direction.

fetch batches from the source → ship them to the target → commit what the target acknowledged.

The Flow holds its collaborators, built at its start by replicator.assembly: the
GroupMember says which source partitions are ours and where to start; the Fetcher
reads them as raw batches; the Shipper turns them into shipments; the target producer
writes them idempotently (or in transactions); the Committer makes acknowledged
positions safe to commit (offset map, or transactions). Answers from both clusters come
back on their IO threads as events and are handled here, on the flow's own thread, in order.

The Flow only copies: which topics, and the shape of their targets, it learns from its
direction's controller (replicator.controller), which creates, grows and configures them.

Three things to find here: the loop (`_step`), the commit rule (`_commit`), and the
failure policy (`_handle`, `_fetch_failed`, `revoked`).
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from typing import Callable

from kafka.errors import (
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import TopicPartition

from . import batches, logs
from .assembly import Parts, assemble
from .checkpoint import Checkpoint, Failure
from .config import ReplicatorConfig
from .controller import TopicSource
from .errors import ClusterError, ConfigError, Fenced, RecordRejected, TopicRecreated
from .fetcher import FetchAnswer
from .group_member import Refused
from .health import Health, commit_bound, poll_bound
from .metrics import FlowMetrics
from .shipping import Step, Target
from .topics import Identities, Layout, Synced

log = logging.getLogger(__name__)

TOPICS_POLL_SECONDS = 0.5  # how often the flow looks at what its controller published
FIRST_TOPICS_PATIENCE_SECONDS = 10.0  # waited for the controller's first topic sync before saying so
EVENT_WAIT_SECONDS = 0.05
GROUP_POLL_MS = 100
# A poll with nothing to take still walks every assigned partition (kafka-python validates
# each position); group work to finish (a join) is seen at every round and polled for at once.
GROUP_POLL_INTERVAL_SECONDS = 1.0
# Commits wait while the group rebalances; a rebalance that lasts longer deserves a warning.
REBALANCE_PATIENCE_SECONDS = 60.0
# The runbook greps `Auto commit` to see commits happen: the first is logged, then a summary
# at most this often, not a line a second.
COMMIT_LOG_SECONDS = 60.0


class State(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Flow:
    def __init__(self, config: ReplicatorConfig, direction: str, member: str | None = None,
                 assemble: Callable[[Flow], Parts] = assemble, identities: Identities | None = None,
                 topics: TopicSource | None = None):
        """`assemble(flow)` builds the collaborators when the flow starts; tests give fakes.
        `identities`: the source topics' ids the member's earlier flows saw. `topics`: the
        direction's controller (None: the flow runs one of its own, see assembly)."""
        self.config = config
        self.topics = topics
        self.direction = direction
        self.member = member
        self.metrics = FlowMetrics()
        self._assemble = assemble
        self._settings = config.direction(direction)
        self._group_config = config.group(direction)
        self._routes = {route.source_topic_name: route.target for route in self._settings.topics}
        self._identities = identities or Identities()
        self._refused = self._identities.refused
        self._unknown: set[TopicPartition] = set()  # the source said no such topic at the last fetch
        # Out of the source log's range: reset once a topic sync asked for at that time (s since
        # the epoch) says that the topic was not created again.
        self._rechecks: dict[TopicPartition, float] = {}
        self._checkpoint = Checkpoint()
        self._parts: Parts | None = None  # its fetcher, shipper, producer, committer and group, from run()
        self._source: TopicSource | None = None
        self._synced: Synced | None = None  # the controller's answer followed last
        self._stopping = threading.Event()
        self._leave_group = False
        self._rejoin = threading.Event()
        self._health = Health(direction, member, commit_bound=commit_bound(config, direction),
                              poll_bound=poll_bound(config, direction))
        self._commits_unlogged = 0
        self._next_commit_log = 0.0
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._layouts: dict[str, Layout] = {}
        self._targets: dict[TopicPartition, Target] = {}
        self._stopped: dict[TopicPartition, RecordRejected] = {}
        self._singles: dict[TopicPartition, int] = {}  # send one record per batch below this offset
        self._max_unacked_bytes = 2 * config.consumer.fetch_max_bytes
        self._next_commit = 0.0
        self._next_topics = 0.0
        self._next_group_poll = 0.0
        self._rebalancing_since: float | None = None
        self._committed_at = 0.0  # the last commit that went through (or had nothing to do)
        self._overdue = False
        self._next_rebalance_warning = 0.0
        self._resume_at: dict[TopicPartition, int] = {}  # positions the committer found on the target
        self._failure: Exception | None = None  # met in a rebalance callback, raised by the loop

    def run(self) -> None:
        """Replicate until stop() is called; commit what was acknowledged on the way out."""
        try:
            self._parts = parts = self._assemble(self)
            self._fetcher, self._shipper, self._producer = parts.fetcher, parts.shipper, parts.producer
            self._committer, self._group = parts.committer, parts.group
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
        thread (the group member is used on the loop's own)."""
        self._rejoin.set()

    def topics_from(self, source: TopicSource) -> None:
        """Follow the topics `source` publishes; waits for its first answer, so that nothing
        is copied into a target topic the controller has not created yet."""
        self._source = source
        waiting_since = time.monotonic()
        said = False
        while (synced := source.current()) is None:
            if not said and time.monotonic() - waiting_since > FIRST_TOPICS_PATIENCE_SECONDS:
                said = True
                log.warning("%s %s: waiting for the direction's controller to list the topics "
                            "(its log says why it has not)", self.direction, self.member or "-")
            if self._stopping.wait(EVENT_WAIT_SECONDS * 2):
                return
        self._follow(synced)

    @property
    def routes(self) -> dict[str, str]:
        """Source → target of the topics copied now (explicit ones even while missing)."""
        return dict(self._routes)

    def health(self) -> Health:
        health = self._health
        health.in_flight = self._checkpoint.in_flight()
        if health.state == State.RUNNING.value:
            health.since_commit = time.monotonic() - self._committed_at
        health.stopped = {f"{tp.topic}[{tp.partition}]": str(err) for tp, err in self._stopped.items()}
        health.stopped.update({topic: str(err) for topic, err in self._refused.items()})
        return health

    # The loop --------------------------------------------------------------------------

    def _step(self) -> None:
        if self._failure is not None:
            raise self._failure
        evicted = self._group.evicted()
        if self._rejoin.is_set():
            self._rejoin.clear()
            self._group.rejoin()
        joining = self._group.needs_time()
        busy = evicted or joining
        self._health.evicted = evicted
        if joining:
            self._health.rebalancing = True  # until a commit goes through after it
        if busy or time.monotonic() >= self._next_group_poll:
            self._poll_group(busy)
        if (not evicted and not self._commits_overdue()
                and self._producer.unacknowledged_bytes < self._max_unacked_bytes):
            self._fetcher.pump(self._events.put)
        self._producer.pump(self._events.put)
        self._handle_events(EVENT_WAIT_SECONDS)
        settled = self._settle()
        now = time.monotonic()
        if (self._committer.due() or (settled and not self._group_config.enable_auto_commit)
                or now >= self._next_commit):
            self._next_commit = now + self._group_config.auto_commit_interval_ms / 1000.0
            self._commit()
            self._update_lag()
        if now >= self._next_topics:
            self._next_topics = now + TOPICS_POLL_SECONDS
            synced = self._source.current()
            if synced is not None and synced is not self._synced:
                self._follow(synced)

    def _poll_group(self, busy: bool) -> None:
        # Heartbeats run on the consumer's own thread; a poll only has to take what the
        # group decided (a join, an assignment), and costs about a millisecond even idle.
        early = self._group.poll(GROUP_POLL_MS if busy else 0)
        self._next_group_poll = time.monotonic() + GROUP_POLL_INTERVAL_SECONDS
        self._health.last_poll = time.time()
        self._adopt(early)

    def _adopt(self, early: dict[TopicPartition, int]) -> None:
        """Start fetching newly assigned partitions from the group's position (or the one the
        committer found), or where a fetch made before the pause took effect began."""
        assigned = self._group.assignment()
        owned = set(self._fetcher.owned())
        # A topic the last sync did not find (deleted, or not listed yet) or refused waits idle.
        new = [tp for tp in assigned if tp not in owned and tp not in self._stopped
               and tp.topic in self._layouts]
        if new:
            self._resume_at.update(self._committer.take_over(new))
        for tp in new:
            position = self._resume_at.pop(tp, None)
            if position is None:
                position = self._group.position(tp)
                if tp in early:
                    position = early[tp] if position is None else min(position, early[tp])
            if position is not None:
                self._fetcher.assign(tp, position)
                self._checkpoint.advance(tp, position)
        gone = owned - set(assigned)
        if gone:
            self.forget(gone)

    def _handle_events(self, wait: float, take_fetched: bool = True) -> None:
        """Every answer waiting (after up to `wait` s for the first); fetched data not taken
        is dropped and fetched again later from the same position."""
        try:
            event = self._events.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            if isinstance(event, FetchAnswer):
                if take_fetched:
                    self._fetched(event)
                else:
                    self._fetcher.discard(event.node)
            else:  # a ProduceAnswer
                for delivery in event.producer.answered(event.node, event.shipments, event.answer):
                    if delivery.timestamp is not None:  # None: a write of the offset map
                        self.metrics.acknowledged(delivery.timestamp, delivery.topic)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _commits_overdue(self) -> bool:
        """No commit for the committer's patience: the group coordinator is out of reach, or a
        rebalance does not end. Fetching waits for a commit to go through, so that what the
        partitions' next owner may copy again stays bounded."""
        patience = self._committer.patience
        if patience is None:
            return False
        # Nothing acknowledged waiting: a loop held up (in a long join, say) has nothing to replay.
        overdue = time.monotonic() - self._committed_at > patience and bool(self._for_group(self.acknowledged()))
        if overdue != self._overdue:
            self._overdue = overdue
            if overdue:
                log.warning("%s %s: no commit went through for %.0fs; nothing more is fetched until "
                            "one does, so that a replay from the last commit stays short",
                            self.direction, self.member or "-", patience)
            else:
                log.info("%s %s: commits go through again", self.direction, self.member or "-")
        return overdue

    def _fetched(self, event: FetchAnswer) -> None:
        if self._group.evicted():
            self._fetcher.discard(event.node)  # read again from the same positions, if still ours
            return
        for part in self._fetcher.answered(event.node, event.sent, event.answer):
            tp = part.tp
            if part.error is not None:
                self._fetch_failed(tp, part.error)
                continue
            self._unknown.discard(tp)
            fetched = batches.split(part.records)
            if not fetched:
                continue
            target = self._targets.get(tp) or self._target_for(tp)
            if target is None:
                continue  # its topic is no longer copied: deleted or refused by the sync just made
            steps = self._shipper.plan(tp, target, part.position, fetched, part.aborted,
                                       self._singles.get(tp, -1))
            self._stage(tp, steps)
            self._fetcher.advance(tp, fetched[-1].next_offset)

    def _stage(self, tp: TopicPartition, steps: list[Step]) -> None:
        checkpoint, submit, metrics = self._checkpoint, self._producer.submit, self.metrics
        for step in steps:
            if step.shipments:
                checkpoint.pending(tp).append((step.first, step.next, step.delivery))
                for shipment in step.shipments:
                    submit(shipment)
            else:
                checkpoint.done(tp, step.first, step.next)
            metrics.shipped(tp.topic, step.how, step.records, step.bytes, step.loop_skipped)

    def _target_for(self, tp: TopicPartition) -> Target | None:
        layout = self._layouts.get(tp.topic)
        if layout is None or tp.partition >= layout.source_partitions:
            self._await_topics(tp)  # a partition that appeared since the last sync
            return None
        preserve = (self._settings.partitioning == "preserve"
                    and layout.target_partitions >= layout.source_partitions)
        target = Target(self._routes[tp.topic], layout.target_partitions,
                        tp.partition if preserve else None)
        self._targets[tp] = target
        return target

    def _follow(self, synced: Synced) -> None:
        """Take up what the controller's last topic sync found: new topics and partitions
        followed, deleted ones dropped, recreated ones refused."""
        self._synced = synced
        self._check_identities(synced)
        layouts = {source: layout for source, layout in synced.layouts.items() if source not in self._refused}
        for topic in self._layouts.keys() - layouts.keys() - self._refused.keys():
            log.info("%s: source topic %r no longer exists on the %s cluster: it is no longer "
                     "copied; its target topic %r is kept", self.direction, topic,
                     self.config.clusters(self.direction)[0][0], self._routes[topic])
            self._drop_topic(topic)
        routes = {source: target for source, target in synced.routes.items() if source not in self._refused}
        if routes != self._routes:
            added = sorted(routes.keys() - self._routes.keys())
            if added:
                log.info("%s: copying %s, found on the source", self.direction,
                         ", ".join(f"{source!r} to {routes[source]!r}" for source in added))
            self._routes = routes
            if self._parts is not None:
                self._parts.follow(routes)
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
        for tp in self._unknown - set(self._rechecks):
            if tp.topic in layouts:
                self._fetcher.resume(tp)
        if layouts != self._layouts:
            grew = any(layout.source_partitions > self._layouts[source].source_partitions
                       for source, layout in layouts.items() if source in self._layouts)
            self._layouts = layouts
            self._targets.clear()
            if grew and self._parts is not None:
                self._group.topics_grew()
        for tp, asked in list(self._rechecks.items()):
            if synced.at >= asked:  # the clocks of a cluster's nodes agree closely enough here
                del self._rechecks[tp]
                self._unknown.discard(tp)
                self._reset(tp)

    def _await_topics(self, tp: TopicPartition) -> None:
        """Fetch nothing more from `tp`, and commit none of it, until the controller's next
        topic sync says what became of its topic."""
        self._unknown.add(tp)
        self._fetcher.pause(tp)
        self._source.refresh_soon()

    def _check_identities(self, synced: Synced) -> None:
        """Refuse a source topic whose topic id changed: it was deleted and created again.

        Its offsets start over, so copying on would mix the new topic's records into the old
        one's target, and a committed position might skip new records.
        """
        for topic, topic_id in synced.ids.items():
            known = self._identities.ids.setdefault(topic, topic_id) if topic_id else None
            if known is not None and known != topic_id and topic not in self._refused:
                refused = TopicRecreated(self.direction, topic, synced.routes[topic], known, topic_id)
                log.error("%s: %s", self.direction, refused)
                self._refused[topic] = refused
                self._drop_topic(topic)

    def _drop_topic(self, topic: str) -> None:
        """Stop fetching and committing a source topic; nothing of it is committed again (a
        deleted topic's offsets are gone with it, a refused one's belong to the old topic)."""
        if self._parts is not None:  # else found by the first sync, before anything is fetched
            self.forget([tp for tp in self._fetcher.owned() if tp.topic == topic])
        self._layouts.pop(topic, None)

    # Acknowledgements -------------------------------------------------------------------

    def _settle(self) -> bool:
        """Advance past what the target acknowledged; True if a position moved."""
        before = self._checkpoint.in_flight()
        for failure in self._checkpoint.settle():
            self._handle(failure)
        return self._checkpoint.in_flight() != before

    def _drain(self, seconds: float, partitions=None) -> bool:
        """Wait for the target's answers (for `partitions`, or all); True if none is missing."""
        return self.run_until(lambda: not self._checkpoint.in_flight(partitions), seconds)

    def run_until(self, done: Callable[[], bool], seconds: float, take_fetched: bool = False) -> bool:
        """Handle answers, fetching nothing new, until `done()`; fetched data is dropped (read
        again later) unless taken."""
        deadline = time.monotonic() + seconds
        while True:
            if done() or time.monotonic() >= deadline:
                return done()
            self._producer.pump(self._events.put)
            self._handle_events(EVENT_WAIT_SECONDS, take_fetched)
            self._settle()

    def acknowledged(self) -> dict:
        return self._checkpoint.to_commit()

    def _for_group(self, positions: dict) -> dict:
        """What the group may be given now. A partition whose topic the source no longer knows
        waits for the topic sync to say why: the group refuses its commit, and kafka-python
        retries that for long. (The offset map and transactions still get its positions.)"""
        return {tp: offset for tp, offset in positions.items() if tp not in self._unknown}

    def quiet(self) -> bool:
        return not self._checkpoint.in_flight() and not self._fetcher.waiting

    def _advance_idle(self) -> None:
        for tp in self._fetcher.owned():
            if tp not in self._stopped:
                self._checkpoint.advance(tp, self._fetcher.position(tp))

    # The commit rule ---------------------------------------------------------------------

    def _commit(self, report=log.warning) -> bool:
        """Commit exactly what the target acknowledged, once the committer made it safe (the
        offset map written, or the transactions committed); False if not now."""
        self._advance_idle()
        positions = self._committer.ready(self)
        if positions is None:
            return False
        positions = self._for_group(positions)
        if not positions:
            self._commit_went_through()
            return True
        started = time.monotonic()
        refusal = self._group.commit(positions)
        if refusal is not None:
            if refusal.kind is Refused.REBALANCING:
                self._commit_waits()
            elif refusal.kind is Refused.MOVED:
                report("%s: commit failed during a rebalance (%s); the partitions' next owner "
                       "replays from the last commit, so some records may be duplicated",
                       self.direction, refusal.reason)
            else:
                report("%s: commit failed (%s); retrying at the next commit", self.direction,
                       refusal.reason)
            return False
        self._checkpoint.committed(positions)
        self._commit_went_through(positions)
        self.metrics.committed(time.monotonic() - started)
        self._rebalancing_since = None
        self._committer.committed(self)
        return True

    def _commit_went_through(self, positions: dict | None = None) -> None:
        now = time.monotonic()
        self._committed_at = now
        if not self._group.needs_time():
            self._health.rebalancing = False
        if not positions:
            return
        self._commits_unlogged += 1
        if now >= self._next_commit_log:
            self._next_commit_log = now + COMMIT_LOG_SECONDS
            how = " (transaction)" if self._settings.exactly_once else ""
            shown = ", ".join(f"{tp.topic}[{tp.partition}]@{offset}"
                              for tp, offset in sorted(positions.items())[:5])
            more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
            log.info("%s %s: Auto commit of offsets%s: %d commit%s since the last such line; "
                     "the last: %s%s", self.direction, self.member or "-", how,
                     self._commits_unlogged, "" if self._commits_unlogged == 1 else "s", shown, more)
            self._commits_unlogged = 0

    def _commit_waits(self) -> None:
        """A commit refused while the group rebalances is normal; one refused for long is not."""
        now = time.monotonic()
        self._health.rebalancing = True
        if self._rebalancing_since is None:
            self._rebalancing_since = now
            self._next_rebalance_warning = now + REBALANCE_PATIENCE_SECONDS
            log.info("%s: group %s is rebalancing; acknowledged offsets are committed once it "
                     "settles", self.direction, self._group_config.group_id)
        elif now >= self._next_rebalance_warning:
            self._next_rebalance_warning = now + REBALANCE_PATIENCE_SECONDS
            log.warning("%s: group %s has been rebalancing for %.0fs, so nothing is committed; "
                        "check its members with kafka-consumer-groups.sh --describe --members "
                        "--group %s", self.direction, self._group_config.group_id,
                        now - self._rebalancing_since, self._group_config.group_id)

    def _update_lag(self) -> None:
        lag = {}
        for tp, end in self._fetcher.high_watermarks.items():
            position = self._checkpoint.position(tp)
            if position is not None:
                lag[f"{tp.topic}[{tp.partition}]"] = max(0, end - position)
        self.metrics.set_lag(lag)

    # The failure policy ------------------------------------------------------------------
    # A write the target did not acknowledge is fetched again; one it refuses for good is
    # narrowed to its record, then skipped or its partition stopped (onError). A fetch out
    # of the log's range restarts at autoOffsetReset; a refused read stops the flow. A
    # failure met in a rebalance callback is raised by the loop (`_step`).

    def _handle(self, failure: Failure) -> None:
        tp, offset, error = failure.partition, failure.offset, failure.error
        if getattr(error, "retriable", False):
            log.warning("%s: %s[%d]@%d not acknowledged by the target (%s); fetching it again",
                        self.direction, tp.topic, tp.partition, offset, type(error).__name__,
                        extra=logs.at(tp.topic, tp.partition, offset))
            self.metrics.failed()
            self._rewind(tp)
            return
        reason = f"{type(error).__name__}: {error}"
        if self._singles.get(tp, -1) <= offset:
            # A whole batch was refused: find the record, so that onError applies to it alone.
            log.warning("%s: the target refused %s[%d]@%d-%d (%s); sending those records one "
                        "per batch to find the one it refuses", self.direction, tp.topic,
                        tp.partition, offset, failure.next_offset - 1, reason,
                        extra=logs.at(tp.topic, tp.partition, offset))
            self._singles[tp] = failure.next_offset
            self._rewind(tp)
            return
        if self._settings.on_error == "skip":
            log.error("%s: skipping %s[%d]@%d, rejected by the target: %s (onError: skip)",
                      self.direction, tp.topic, tp.partition, offset, reason,
                      extra=logs.at(tp.topic, tp.partition, offset))
            self.metrics.skipped(tp.topic)
            self._checkpoint.skip_failed(tp)
            self._settle()
            return
        rejected = RecordRejected(tp.topic, tp.partition, offset, reason)
        log.error("%s: %s", self.direction, rejected, extra=logs.at(tp.topic, tp.partition, offset))
        self.metrics.failed()
        self._stopped[tp] = rejected
        self._checkpoint.rewind(tp)
        self._fetcher.pause(tp)

    def _lost_upstream(self, tp: TopicPartition, position: int, start: int) -> None:
        """The source deleted records before they were copied (retention, DeleteRecords): say
        which and how many, count them, and go on from the log's start."""
        lost = start - position
        log.error("%s: records lost upstream: %s[%d] offsets %d-%d (%d records) were deleted at the "
                  "source before they were copied", self.direction, tp.topic, tp.partition,
                  position, start - 1, lost)
        self.metrics.lost_upstream(tp.topic, lost)
        self._checkpoint.rewind(tp)
        self._fetcher.seek(tp, start)
        self._checkpoint.advance(tp, start)

    def _rewind(self, tp: TopicPartition) -> None:
        """Drop the partition's in-flight writes and fetch again from the first of them."""
        offset = self._checkpoint.rewind(tp)
        if offset is not None:
            self._fetcher.seek(tp, offset)

    def _fetch_failed(self, tp: TopicPartition, error: type) -> None:
        if error is OffsetOutOfRangeError:
            position = self._fetcher.position(tp)
            start = self._group.reset_offset(tp, "earliest")
            if position is not None and position < start:
                self._lost_upstream(tp, position, start)
                return
            # A topic deleted and created again starts its offsets over: it is refused by the
            # next sync, rather than copied from a reset position into the old topic's target.
            self._rechecks[tp] = time.time()
            self._await_topics(tp)
            return
        if error is UnknownTopicOrPartitionError:
            # Deleted at the source, and perhaps created again already: nothing more is fetched
            # from it until the topic sync says which (the same topic resumes).
            self._await_topics(tp)
            return
        if error is TopicAuthorizationFailedError:
            side, cluster = self.config.clusters(self.direction)[0]
            raise ClusterError(side, cluster.bootstrap_servers,
                               f"not authorized to read topic {tp.topic!r}; grant the replicator's "
                               "principal Read on it")
        log.warning("%s: fetching %s[%d] failed (%s); trying again", self.direction, tp.topic,
                    tp.partition, error.__name__, extra=logs.at(tp.topic, tp.partition))

    def _reset(self, tp: TopicPartition) -> None:
        """Restart a partition out of the source log's range at autoOffsetReset; its topic
        is the one copied so far (a sync said so since)."""
        if tp.topic not in self._layouts or self._fetcher.position(tp) is None:
            return  # dropped or refused meanwhile
        reset = self.config.offset_reset(self.direction)
        offset = self._group.reset_offset(tp, reset)
        log.warning("%s: %s[%d]@%d is out of the source log's range (deleted by retention?); "
                    "restarting at the %s offset %d", self.direction, tp.topic, tp.partition,
                    self._fetcher.position(tp), reset, offset,
                    extra=logs.at(tp.topic, tp.partition, self._fetcher.position(tp)))
        self._checkpoint.rewind(tp)
        self._fetcher.seek(tp, offset)
        self._checkpoint.advance(tp, offset)
        self._fetcher.resume(tp)

    # Rebalance callbacks (group_member.Listener): the consumer runs them on its IO thread
    # while the flow's own thread waits in poll(), so they never run beside the loop.

    def revoked(self, partitions) -> dict:
        """Wait for the target's answers on revoked partitions; return what to commit."""
        self._health.rebalancing = True
        log.info("%s %s: rebalance: partitions revoked: %s", self.direction, self.member or "-",
                 _names(partitions))
        patience = min(10.0, self._group_config.session_timeout_ms / 3000.0)
        self._drain(patience, set(partitions))
        self._advance_idle()
        try:
            positions = self._committer.flush(self, patience)
        except (ClusterError, Fenced) as exc:
            log.error("%s: %s; the revoked partitions are not committed", self.direction, exc)
            self._failure = exc  # the map's or the transactions' state is unknown: start again
            return {}
        return {tp: pos for tp, pos in self._for_group(positions).items() if tp in partitions}

    def committed(self, positions: dict) -> None:
        self._checkpoint.committed(positions)
        self._committed_at = time.monotonic()
        self.metrics.committed(0.0)

    def rebalanced(self, generation: int, owned: list) -> None:
        # Logged by every member that lives through a rebalance: the runbook greps for it.
        self._health.generation = generation
        log.info("%s %s: rebalance complete (group %s, generation %d): partition assignment "
                 "now %s", self.direction, self.member or "-", self._group_config.group_id,
                 generation, _names(owned))

    def assigned(self, added: list, owned: list) -> None:
        self.metrics.rebalanced()
        self._health.assigned = _names(owned)
        log.info("%s %s: partition assignment: added %s; now owns %s", self.direction,
                 self.member or "-", _names(added), _names(owned))

    def forget(self, partitions) -> None:
        self._committer.forget(partitions)
        for tp in partitions:
            self._resume_at.pop(tp, None)
        self._checkpoint.forget(partitions)
        self._fetcher.forget(partitions)
        for tp in partitions:
            self._stopped.pop(tp, None)
            self._unknown.discard(tp)
            self._rechecks.pop(tp, None)
            self._targets.pop(tp, None)
            self._singles.pop(tp, None)
        gone = set(_names(partitions))
        self._health.assigned = [name for name in self._health.assigned if name not in gone]

    # Stop ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Ordered: stop fetching, wait for the target's answers, commit them, close."""
        if self._health.state != State.FAILED.value:
            self._health.state = State.STOPPING.value
        grace = self.config.shutdown_grace_period_seconds
        parts = self._parts
        if parts is not None:
            if not self._drain(grace * 0.5):
                log.warning("%s: the target did not acknowledge everything within %.0fs; the "
                            "rest is replayed by the partitions' next owner", self.direction,
                            grace * 0.5)
            self._settle()
            self._final_commit(grace * 0.25)
            self._committer.close()
            if self._leave_group:
                self._group.leave_on_close()
            parts.close(int(grace * 250))
        if self._health.state != State.FAILED.value:
            self._health.state = State.STOPPED.value
        log.info("%s %s: stopped", self.direction, self.member or "-")

    def _final_commit(self, seconds: float) -> None:
        """Commit on the way out; a rebalance under way is finished first (nothing is fetched)."""
        deadline = time.monotonic() + seconds
        report = log.warning
        # A commit may cover what was mapped before the last answers came: go on until all is.
        while (not self._commit(report) or self._for_group(self.acknowledged())) and time.monotonic() < deadline:
            report = log.debug  # the first refusal said it all
            if not self._committer.wait_for_write(self):
                self._group.poll(200)


def _names(partitions) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]
