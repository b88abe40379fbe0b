"""Everything that uses kafka-python below its public API, in one place; the group's
consumer is owned by replicator.group_member, which hands it to the functions here (and
picks its partition assignor from `kafka.coordinator.assignors`).

The batch data path speaks Kafka's protocol itself, on kafka-python 3.0's network
layer, because kafka-python's consumer and producer decode and encode every record
in Python (~75 µs a record); whole batches as bytes cost a few µs each. Relied on:

- `kafka.net.KafkaNetClient` and its `_manager` (connections, cluster metadata) and
  `_net` (the selector and its IO thread): a client for requests we build ourselves;
  `ClusterMetadata._last_successful_refresh_ms` (whether leaders may have moved);
- `kafka.protocol` messages `FetchRequest`/`FetchResponse` (v4–v12, read_committed, in
  fetch sessions from v7),
  `ProduceRequest`/`ProduceResponse` (v3–v9, acks=all), `InitProducerIdRequest` (an
  idempotent producer id, or a transactional one), and for exactly-once
  `FindCoordinatorRequest` (transaction coordinators), `AddPartitionsToTxnRequest` and
  `EndTxnRequest` (v3 and below: one transaction per request, no epoch bump per commit);
- `kafka.codec` (the batch compression codecs), `kafka.record.MemoryRecords` (decoding
  message formats v0/v1, which only very old producers write) and
  `kafka.partitioner.default.murmur2` (Kafka's key hash, for `partitioning: hash`);
- `KafkaConsumer._subscription` (a partition's position without I/O),
  `KafkaConsumer._coordinator.coordinator_unknown()/need_rejoin()/stable()` (whether a
  poll must be given time: a poll with no timeout never completes a join) and
  `KafkaConsumer._coordinator._commit_offsets_sync_async` (a commit from a rebalance
  listener, which runs on the consumer's IO thread where `commit()` would deadlock);
- `KafkaConsumer._coordinator.need_rejoin/join_group_async`, `_join_task` and `state`,
  wrapped so that a join finished between two polls is taken, not lost (`complete_joins`);
- `KafkaConsumer._coordinator._on_join_complete_async`, wrapped to tell of every completed
  join (`on_join_complete`): the rebalance listener hears only of partitions added or revoked;
- `ClusterMetadata._topics` (`track_only`) and `KafkaConsumer._cluster` and
  `_subscription.reset_group_subscription()` (`track_subscription_only`): metadata for the
  topics copied now, without a topic deleted at the source, and `request_update()` on it
  (`refresh_group_metadata`) when a source topic grew;
- the logger `kafka.net.selector` (`SELECTOR_LOGGER`), which a busy node floods;
- for the benchmark's tools: `KafkaProducer._accumulator.append` and `_sender.wakeup`
  (`unchecked_send`), and `kafka.record.default_records.DefaultRecordBatchBuilder`'s
  size estimates (`one_record_batch_size`).

Requests are handed to the IO thread and answered through Futures whose callbacks
run there; callers pass callbacks that only enqueue.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from kafka.codec import (
    gzip_decode,
    gzip_encode,
    lz4_decode,
    lz4_encode,
    snappy_decode,
    snappy_encode,
    zstd_decode,
    zstd_encode,
)
from kafka.errors import for_code
from kafka.net import KafkaNetClient
from kafka.partitioner.default import murmur2
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.protocol.producer import (
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
    ProduceRequest,
)
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

READ_COMMITTED = 1
ACKS_ALL = -1
_FetchTopic = FetchRequest.FetchTopic
_FetchPartition = FetchRequest.FetchTopic.FetchPartition
_ForgottenTopic = FetchRequest.ForgottenTopic
_ProduceTopic = ProduceRequest.TopicProduceData
_ProducePartition = ProduceRequest.TopicProduceData.PartitionProduceData


# Batch attribute codec ids (0 is none) to kafka-python's functions.
DECOMPRESS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
COMPRESS = {1: gzip_encode, 2: snappy_encode, 3: lz4_encode, 4: zstd_encode}


def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of a key, made positive."""
    return murmur2(key) & 0x7FFFFFFF


def legacy_records(data: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(offset, timestamp, key, value) of a message-format v0/v1 batch."""
    return [(r.offset, r.timestamp, r.key, r.value) for r in MemoryRecords(data).next_batch()]


class Wire:
    """Raw requests to one cluster, on a network client with its own IO thread."""

    def __init__(self, settings: dict, receive_max_bytes: int, request_timeout_ms: int = 30_000,
                 max_in_flight: int = 5):
        # A request beyond `max_in_flight` on a connection is refused at once, not queued.
        self._client = KafkaNetClient(**settings, receive_message_max_bytes=receive_max_bytes,
                                      request_timeout_ms=request_timeout_ms,
                                      max_in_flight_requests_per_connection=max_in_flight)
        self._manager = self._client._manager
        self._net = self._client._net
        self._net.start()
        self.request_timeout_ms = request_timeout_ms

    def bootstrap(self, timeout_ms: int) -> None:
        self._manager.bootstrap(timeout_ms)

    def track(self, topics) -> None:
        """Keep metadata (leaders) for these topics, and for no others."""
        track_only(self._manager.cluster, topics)

    def refresh(self) -> None:
        self._manager.cluster.request_update()

    def metadata_stamp(self) -> float:
        """Changes whenever the cluster metadata (the partitions' leaders) is updated."""
        return self._manager.cluster._last_successful_refresh_ms

    def leader(self, tp: TopicPartition) -> int | None:
        node = self._manager.cluster.leader_for_partition(tp)
        return None if node is None or node == -1 else node

    def send(self, node_id, request):
        """Send from any thread; the Future completes on the IO thread."""
        return self._manager.call_soon(self._send, node_id, request)

    async def _send(self, node_id, request):
        return await self._manager.send(request, node_id=node_id)

    def call(self, request, timeout_ms: int):
        """Send to the least loaded broker and wait for the answer."""
        async def _call():
            node = self._manager.least_loaded_node()
            return await self._manager.wait_for(self._manager.send(request, node_id=node), timeout_ms)
        return self._manager.run(_call)

    def ask(self, calls: list[tuple[int | None, object]], timeout_ms: int) -> list:
        """Send every (node, request) at once (None: the least loaded node) and wait for all;
        each answer is the response, or the exception that ended its request."""
        async def _all():
            manager = self._manager
            sent = [manager.send(request, node_id=node if node is not None else manager.least_loaded_node())
                    for node, request in calls]
            answers = []
            for future in sent:
                try:
                    answers.append(await manager.wait_for(future, timeout_ms))
                except Exception as exc:  # one answer per call, whatever happened to it
                    answers.append(exc)
            return answers
        return self._manager.run(_all)

    def close(self) -> None:
        self._client.close()
        self._net.stop(timeout_ms=5_000)


# Fetch ---------------------------------------------------------------------------------

@dataclass
class FetchedPartition:
    tp: TopicPartition
    error: type | None
    high_watermark: int
    records: bytes
    aborted: list[tuple[int, int]]


NO_FETCH_SESSION = (0, -1)  # session id and epoch of a fetch outside any session


def fetch_request(offsets: dict[TopicPartition, int], partition_max_bytes: int, max_bytes: int,
                  max_wait_ms: int, min_bytes: int = 1, session_id: int = NO_FETCH_SESSION[0],
                  session_epoch: int = NO_FETCH_SESSION[1], forgotten=()):
    """A read_committed fetch of `offsets`; in a fetch session (KIP-227, v7 and up) it may
    list only some of the session's partitions, and `forgotten` ones leave it."""
    topics: dict[str, list] = {}
    for tp, offset in offsets.items():
        topics.setdefault(tp.topic, []).append(_FetchPartition(
            partition=tp.partition, current_leader_epoch=-1, fetch_offset=offset,
            last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=partition_max_bytes))
    gone: dict[str, list[int]] = {}
    for tp in forgotten:
        gone.setdefault(tp.topic, []).append(tp.partition)
    return FetchRequest(
        replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
        isolation_level=READ_COMMITTED, session_id=session_id, session_epoch=session_epoch,
        topics=[_FetchTopic(topic=t, partitions=p) for t, p in topics.items()],
        forgotten_topics_data=[_ForgottenTopic(topic=t, partitions=p) for t, p in gone.items()],
        rack_id="", min_version=4, max_version=12)


def fetch_session(response) -> tuple[type | None, int]:
    """The error that refused a fetch as a whole (its session unknown, say), and the fetch
    session id the broker gave (0: none; a broker below v7 gives none)."""
    error_code = getattr(response, "error_code", 0) or 0
    return (for_code(error_code) if error_code else None), getattr(response, "session_id", 0) or 0


def fetched(response) -> list[FetchedPartition]:
    out = []
    for topic in response.responses:
        for p in topic.partitions:
            aborted = [(a.producer_id, a.first_offset) for a in (p.aborted_transactions or ())]
            out.append(FetchedPartition(
                TopicPartition(topic.topic, p.partition_index),
                for_code(p.error_code) if p.error_code else None,
                p.high_watermark, p.records or b"", aborted))
    return out


# Produce -------------------------------------------------------------------------------

def produce_request(batches: dict[TopicPartition, bytes], timeout_ms: int,
                    transactional_id: str | None = None):
    topics: dict[str, list] = {}
    for tp, data in batches.items():
        topics.setdefault(tp.topic, []).append(_ProducePartition(index=tp.partition, records=data))
    return ProduceRequest(
        transactional_id=transactional_id, acks=ACKS_ALL, timeout_ms=timeout_ms,
        topic_data=[_ProduceTopic(name=t, partition_data=p) for t, p in topics.items()],
        min_version=3, max_version=9)


def produced(response) -> dict[TopicPartition, tuple[type | None, int]]:
    """Per partition: the error class (None on success) and the base offset written."""
    out = {}
    for topic in response.responses:
        for p in topic.partition_responses:
            out[TopicPartition(topic.name, p.index)] = (
                for_code(p.error_code) if p.error_code else None, p.base_offset)
    return out


def init_producer_id(wire: Wire, timeout_ms: int) -> tuple[int, int]:
    """A fresh idempotent producer id and epoch from the cluster."""
    request = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000,
                                    producer_id=-1, producer_epoch=-1, max_version=4)
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        response = wire.call(request, timeout_ms)
        if not response.error_code:
            return response.producer_id, response.producer_epoch
        error = for_code(response.error_code)
        if not error.retriable or time.monotonic() > deadline:
            raise error()
        time.sleep(0.2)  # the broker is still loading its producer-id state


# Transactions --------------------------------------------------------------------------
# Each builder makes one request for one transactional id; each reader returns the error
# class of its answer (None on success) and what it carries.

TRANSACTION_COORDINATOR = 1


def find_coordinator_request(transactional_id: str):
    # key/key_type and coordinator_keys together let the connection pick any version.
    return FindCoordinatorRequest(key=transactional_id, key_type=TRANSACTION_COORDINATOR,
                                  coordinator_keys=[transactional_id])


def coordinator_found(response) -> tuple[type | None, int]:
    result = response.coordinators[0] if getattr(response, "coordinators", None) else response
    return (for_code(result.error_code) if result.error_code else None), result.node_id


def init_transactional_request(transactional_id: str, timeout_ms: int):
    return InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=timeout_ms,
                                 producer_id=-1, producer_epoch=-1, max_version=4)


def producer_id_given(response) -> tuple[type | None, int, int]:
    error = for_code(response.error_code) if response.error_code else None
    return error, response.producer_id, response.producer_epoch


def add_partitions_request(transactional_id: str, producer_id: int, epoch: int,
                           partitions) -> AddPartitionsToTxnRequest:
    topics: dict[str, list[int]] = {}
    for tp in partitions:
        topics.setdefault(tp.topic, []).append(tp.partition)
    topic = AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
    return AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer_id,
        v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=[topic(name=t, partitions=p) for t, p in topics.items()], max_version=3)


def partitions_added(response) -> type | None:
    """The first error among the partitions (an error on one fails them all)."""
    for topic in response.results_by_topic_v3_and_below:
        for result in topic.results_by_partition:
            if result.partition_error_code:
                return for_code(result.partition_error_code)
    return None


def end_transaction_request(transactional_id: str, producer_id: int, epoch: int, commit: bool):
    return EndTxnRequest(transactional_id=transactional_id, producer_id=producer_id,
                         producer_epoch=epoch, committed=commit, max_version=3)


def transaction_ended(response) -> type | None:
    return for_code(response.error_code) if response.error_code else None


# The group consumer --------------------------------------------------------------------

def track_only(cluster, topics) -> None:
    """Make a kafka-python ClusterMetadata ask for exactly these topics. Its set_topics() only
    ever adds: a topic deleted at the source would be asked for at every refresh, which its
    answer makes ten a second, each logged as an error."""
    cluster.set_topics(list(topics))
    cluster._topics = set(topics)


def track_subscription_only(consumer) -> None:
    """After a new subscription: the consumer's metadata covers it and no topic it left. A
    group leader adds the other members' topics again at its next assignment."""
    consumer._subscription.reset_group_subscription()
    track_only(consumer._cluster, consumer._subscription.group_subscription())


def refresh_group_metadata(consumer) -> None:
    """Have the consumer's metadata refreshed now, not at metadata_max_age_ms (5 min): a group
    leader that sees a topic's new partitions rebalances the group so that they are assigned."""
    consumer._cluster.request_update()


def fetch_position(consumer, tp) -> int | None:
    """The consumer's position in a partition, if known, without any I/O.

    KafkaConsumer.position() resolves unknown positions with network calls and,
    called with a short timeout while a broker restarts, keeps cancelling its own
    offset resets; the subscription state already holds what we need.
    """
    state = consumer._subscription.assignment.get(tp)
    position = state.position if state is not None else None
    return position.offset if position is not None else None


async def commit_in_listener(consumer, positions: dict[TopicPartition, int], timeout_ms: int) -> None:
    """Commit from a rebalance listener, which kafka-python runs on its IO thread."""
    offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
    await consumer._coordinator._commit_offsets_sync_async(offsets, timeout_ms=timeout_ms)


def group_needs_time(consumer) -> bool:
    """Whether poll() has group work to finish (find the coordinator, join).

    A poll(timeout_ms=0) cannot complete that work, and a longer poll of a consumer whose
    partitions are all paused always lasts its whole timeout.
    """
    coordinator = consumer._coordinator
    return coordinator.coordinator_unknown() or coordinator.need_rejoin() or not coordinator.stable()


def positions_missing(consumer) -> bool:
    """Whether poll() has positions to resolve, which it cannot in a poll(timeout_ms=0) either;
    a look at every assigned partition."""
    return not consumer._subscription.has_all_fetch_positions()


def session_expired(consumer) -> bool:
    """Whether the group coordinator has answered no heartbeat for a whole session: the group
    has most likely given this member's partitions to others (its process was paused, say)."""
    return consumer._coordinator.heartbeat.session_timeout_expired()


def heartbeat_answered_since(consumer, moment: float) -> bool:
    """Whether the group coordinator answered a heartbeat after `moment` (time.monotonic())."""
    return consumer._coordinator.heartbeat.last_receive > moment


def request_rejoin(consumer) -> None:
    """Make the consumer's next poll join the group again; the group rebalances when its
    leader does (tests/test_resilience.py shows it)."""
    consumer._coordinator.request_rejoin()


def leave_on_close(consumer) -> None:
    """Make close() send LeaveGroup even for a static member (one with a group.instance.id).

    kafka-python, like Java's consumer, leaves static members in the group until their
    session expires, so that a restart keeps its partitions without a rebalance. A member
    stopped for good must leave at once: its partitions would otherwise wait a session
    for a new owner, or for ever if a new member with its instance id takes its place in
    the middle of a cooperative rebalance (the second half of which never comes).
    """
    consumer._coordinator.is_dynamic_member = lambda: True


def complete_joins(consumer) -> None:
    """Make the consumer's coordinator finish every join it starts, however short its polls.

    kafka-python 3.0.12 drives a join only from poll(), and only while `need_rejoin()`;
    a JoinGroup still in flight when poll() times out goes on alone. Two ways lose it:
    - once it has finished, `join_group_async` sends a new JoinGroup in its place and
      drops the assignment it received: a leader's new JoinGroup rebalances the whole
      group again, and a member that polls briefly (ours does, to keep copying) keeps
      missing its answers;
    - a join started because the leader's metadata changed clears that reason when it
      assigns, so `need_rejoin()` turns False and poll() never takes the answer: the
      member stays "rebalancing" for good, refusing commits and sending no heartbeats.
    As Java's consumer does (`rejoinNeededOrPending`), a join in flight or finished
    counts as a reason to join, and a finished one is awaited once more, not replaced.
    """
    coordinator = consumer._coordinator
    need_rejoin, join_group = coordinator.need_rejoin, coordinator.join_group_async

    def pending_or_needed() -> bool:
        return (need_rejoin() or coordinator._join_task is not None
                or coordinator.state is MemberState.REBALANCING)

    async def join_group_async(timeout_ms=None):
        task = coordinator._join_task
        if task is not None and task.is_done and not isinstance(task, _Finished):
            coordinator._join_task = _Finished(task)
        return await join_group(timeout_ms=timeout_ms)

    coordinator.need_rejoin = pending_or_needed
    coordinator.join_group_async = join_group_async


def on_join_complete(consumer, callback: Callable[[int], None]) -> None:
    """Call `callback(generation)` after each join the consumer completes, whether or not its
    assignment changed (a cooperative rebalance calls the listener only for changes)."""
    coordinator = consumer._coordinator
    complete = coordinator._on_join_complete_async

    async def on_join_complete_async(generation, member_id, protocol, member_assignment_bytes):
        await complete(generation, member_id, protocol, member_assignment_bytes)
        callback(generation)

    coordinator._on_join_complete_async = on_join_complete_async


class _Finished:
    """A finished join task that reads as in flight, so that it is awaited, not replaced."""

    is_done = False

    def __init__(self, task):
        self._task = task

    def add_callback(self, callback):
        self._task.add_callback(callback)
        return self

    def add_errback(self, errback):
        self._task.add_errback(errback)
        return self

    def __await__(self):
        return self._task.__await__()


# Logging and tools ---------------------------------------------------------------------

# Its event loop logs "task ran for over 100 ms" at WARNING, all the time on a busy small node.
SELECTOR_LOGGER = "kafka.net.selector"


def unchecked_send(producer) -> Callable:
    """send(tp, key, value, headers) of a KafkaProducer without its per-record checks and
    logging: each record goes straight to the accumulator, for a third less CPU. Only for
    records known to be valid (the benchmark's pre-load); returns the record's future."""
    append, wakeup = producer._accumulator.append, producer._sender.wakeup

    def send(tp: TopicPartition, key: bytes | None, value: bytes | None, headers: list):
        future, full, new, _ = append(tp, None, key, value, headers, abort_on_new_batch=False)
        if full or new:
            wakeup()
        return future
    return send


def one_record_batch_size(key: bytes | None, value: bytes | None, headers: list) -> int:
    """The bytes of a v2 batch holding this one record (offset and timestamp deltas 0)."""
    return (DefaultRecordBatchBuilder.header_size_in_bytes()
            + DefaultRecordBatchBuilder.size_in_bytes(0, 0, key, value, headers))
