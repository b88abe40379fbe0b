"""A Flow's collaborators, built when it starts, from its config and for its direction.

This is where the two clusters are reached first (so that a problem is named before
anything runs), where `exactlyOnce` is decided (the target producer and the Committer
it implies), and where the Flow joins its consumer group, last, once everything else
is ready. The Flow runs with what `assemble` returns; its unit tests give it fakes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from . import link, logs, map_topic, registry, wire
from .committer import Committer, MapCommitter, TransactionalCommitter
from .controller import Controller
from .fetcher import Fetcher
from .group_member import GroupMember, source_consumer
from .health import commit_bound
from .offset_map import Journal
from .producer import BatchProducer, Shipment
from .provenance import Provenance
from .shipping import Shipper
from .transactions import Transactions

log = logging.getLogger(__name__)

FETCH_WAIT_MS = 100
# Below this a source batch is merged with its neighbours rather than copied: a copy
# costs a fixed few tens of µs per batch, a merge a few µs per record (BENCHMARKS.md).
MERGE_BELOW_BYTES = 4096
CONNECT_TIMEOUT_MS = 15_000
TRANSACTIONAL_REQUESTS_PER_NODE = 64


@dataclass
class Parts:
    """What a Flow runs with."""

    fetcher: Fetcher
    shipper: Shipper
    producer: BatchProducer | Transactions  # writes to the target
    committer: Committer
    group: GroupMember
    closables: list  # closed in order, after the group member
    follow: Callable[[dict[str, str]], None] = lambda routes: None  # the routes changed


    def close(self, timeout_ms: int) -> None:
        self.group.close(timeout_ms)
        for closable in self.closables:
            closable.close()


def assemble(flow) -> Parts:
    """Reach both clusters, build the flow's collaborators and join the group. What was
    opened before a failure is closed again."""
    opened: list = []
    try:
        return _assemble(flow, opened)
    except BaseException:
        for closable in reversed(opened):
            closable.close()
        raise


def _assemble(flow, opened: list) -> Parts:
    config, direction, member = flow.config, flow.direction, flow.member
    settings, group = config.direction(direction), config.group(direction)
    (source_side, source), (target_side, target) = config.clusters(direction)
    source_admin = link.admin_client(source_side, source)
    opened.append(source_admin)
    target_admin = link.admin_client(target_side, target)
    opened.append(target_admin)
    source_id = link.cluster_id(source_admin, source_side, source)
    with link.reaching(source_side, source):
        registry.ensure_topic(source_admin)
    target_id = link.cluster_id(target_admin, target_side, target)
    with link.reaching(target_side, target):
        registry.ensure_topic(target_admin)
    topics = flow.topics
    if topics is None:  # a flow on its own: it runs its direction's controller beside it
        topics = Controller(config, direction, measure_backlog=False).start()  # nobody exports it
        opened.append(topics)
    flow.topics_from(topics)
    routes = flow.routes
    with link.reaching(target_side, target):
        map_topic.ensure_topic(target_admin, map_topic.longest_retention(source_admin, routes))

    source_settings, target_settings = link.client_settings(source), link.client_settings(target)
    consumer = config.consumer
    with link.reaching(source_side, source):
        source_wire = wire.Wire(source_settings,
                                consumer.fetch_max_bytes + consumer.max_partition_fetch_bytes + 65536)
        opened.append(source_wire)
        source_wire.bootstrap(CONNECT_TIMEOUT_MS)
    source_wire.track(list(routes))
    with link.reaching(target_side, target):
        # Exactly-once writes through a producer per source partition, five requests each.
        target_wire = wire.Wire(target_settings, 1 << 20, max_in_flight=(
            TRANSACTIONAL_REQUESTS_PER_NODE if settings.exactly_once else 5))
        opened.append(target_wire)
        target_wire.bootstrap(CONNECT_TIMEOUT_MS)
    target_wire.track(set(routes.values()) | {map_topic.TOPIC})

    def follow(routes: dict[str, str]) -> None:
        """Fetch, write and take part in the group for a new set of topics."""
        source_wire.track(list(routes))
        target_wire.track(set(routes.values()) | {map_topic.TOPIC})
        member_of_group.follow(list(routes))
    producer_ids = registry.Registry(source_settings)
    opened.append(producer_ids)
    with link.reaching(source_side, source):
        producer_ids.load()
    fetcher = Fetcher(source_wire, wire, consumer.max_partition_fetch_bytes, consumer.fetch_max_bytes,
                      FETCH_WAIT_MS, consumer.fetch_min_bytes, consumer.fetch_max_wait_ms)
    producer_config = config.producer
    shipper = Shipper(settings.mode, producer_config.compression_type, producer_config.batch_size,
                      producer_config.max_request_size - 512, MERGE_BELOW_BYTES, producer_ids.is_ours,
                      Provenance(source_id, target_id), _fallbacks(direction))
    journal = Journal(source_id)

    def written(shipment: Shipment) -> None:
        """The target acknowledged a shipment: its spans go to the journal."""
        writer.written(shipment)
        if shipment.offset < 0:
            log.warning("%s: the target did not say where it wrote %s[%d]@%d; the offset map "
                        "cannot translate those offsets", direction, shipment.origin.topic,
                        shipment.origin.partition, shipment.runs[0][0])

    def register(ids: list[int]) -> None:
        registry.register(target_settings, ids, direction, member)

    def map_slow(waited: float) -> None:
        log.warning("%s: the offset map topic %r has not acknowledged a write for %.0fs, so nothing "
                    "is committed; check that it exists on the %s cluster and that its leader is up",
                    direction, map_topic.TOPIC, waited, target_side)

    label = f"{direction} {member or '-'}"
    committer: Committer
    with link.reaching(target_side, target):
        if settings.exactly_once:
            transactions = Transactions(
                target_wire, wire, group.group_id, source_id, (target_side, target.bootstrap_servers),
                producer_config.max_request_size, target_wire.request_timeout_ms, written, register)
            transactions.check()
            target_producer: BatchProducer | Transactions = transactions
            writer = map_topic.MapWriter(journal, target_producer.submit, map_slow)
            committer = TransactionalCommitter(
                transactions, journal, (target_side, target), target_wire.request_timeout_ms / 1000,
                lambda partitions: map_topic.positions(target_settings, group.group_id, source_id, partitions),
                label)
        else:
            def new_producer_id() -> tuple[int, int]:
                producer_id, epoch = wire.init_producer_id(target_wire, CONNECT_TIMEOUT_MS)
                register([producer_id])
                log.info("%s: writing as producer id %d (registered in %s)", label, producer_id,
                         registry.TOPIC)
                return producer_id, epoch

            target_producer = BatchProducer(target_wire, wire, new_producer_id,
                                            producer_config.max_request_size,
                                            target_wire.request_timeout_ms, written)
            writer = map_topic.MapWriter(journal, target_producer.submit, map_slow)
            committer = MapCommitter(writer, (target_side, target), commit_bound(config, direction),
                                     commit_each_acknowledgement=not group.enable_auto_commit)
    member_of_group = GroupMember(source_consumer(config, direction, member), list(routes), direction,
                                  member, group.group_id, group.session_timeout_ms)
    opened.append(member_of_group)
    log.info("%s: replicating %s from %s cluster %s to %s cluster %s, group %s, mode %s",
             label, routes, source_side, source_id, target_side, target_id, group.group_id, settings.mode)
    log.info("%s: AUTO_OFFSET_RESET=%s (where the group has no committed offset)",
             direction, config.offset_reset(direction))
    if settings.exactly_once:
        log.info("%s: exactly once: every %d ms the copies of each source partition and its "
                 "next offset are committed in one transaction on the %s cluster; consumers "
                 "of the target must read with isolation.level=read_committed to see each "
                 "record once", direction, group.auto_commit_interval_ms, target_side)
        # The runbook greps `Auto commit` to see that offsets are committed, in every mode.
        log.info("%s: Auto commit enabled (transaction): the source offsets are committed with "
                 "each transaction, every %d ms", direction, group.auto_commit_interval_ms)
    elif group.enable_auto_commit:
        log.info("%s: Auto commit enabled: acknowledged offsets are committed every %d ms",
                 direction, group.auto_commit_interval_ms)
    else:
        log.info("%s: Auto commit disabled: acknowledged offsets are committed as soon as "
                 "the target acknowledges them", direction)
    member_of_group.join(flow)
    return Parts(fetcher, shipper, target_producer, committer, member_of_group,
                 [source_wire, target_wire, producer_ids, source_admin, target_admin]
                 + ([topics] if topics is not flow.topics else []), follow)


def _fallbacks(direction: str):
    """The Shipper's report of a batch re-encoded instead of copied: once per partition and reason."""
    logged: set = set()

    def fallback(tp, reason: str) -> None:
        if (tp, reason) not in logged:
            logged.add((tp, reason))
            log.info("%s: %s[%d]: records re-encoded instead of copied as a batch: %s",
                     direction, tp.topic, tp.partition, reason, extra=logs.at(tp.topic, tp.partition))
    return fallback
