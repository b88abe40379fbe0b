"""Where each direction's consumer group stands: committed offset, log end, lag, owner.

The same figures `kafka-consumer-groups.sh --describe` prints, for both directions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from . import link
from .config import ReplicatorConfig
from .selection import Selection
from .tables import dash, table


@dataclass(frozen=True)
class PartitionStatus:
    direction: str
    group: str
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int | None
    owner: str | None

    def as_json(self) -> dict:
        return asdict(self)


def describe_groups(config: ReplicatorConfig) -> list[PartitionStatus]:
    rows: list[PartitionStatus] = []
    for direction in config.enabled_directions():
        (side, cluster), _ = config.clusters(direction)
        admin = link.admin_client(side, cluster)
        consumer = None
        try:
            with link.reaching(side, cluster):
                consumer = KafkaConsumer(**link.client_settings(cluster), enable_auto_commit=False)
            rows += describe_group(config, direction, admin, consumer)
        finally:
            admin.close()
            if consumer is not None:
                consumer.close()
    return rows


def describe_group(config: ReplicatorConfig, direction: str, admin: KafkaAdminClient,
                   consumer: KafkaConsumer) -> list[PartitionStatus]:
    """One direction's partitions, through clients of its source cluster that the caller keeps:
    one OffsetFetch, one DescribeGroups and one ListOffsets per leader."""
    (side, cluster), _ = config.clusters(direction)
    group = config.group(direction).group_id
    selection = Selection.of(config.direction(direction))
    with link.reaching(side, cluster):
        committed = admin.list_group_offsets({group: None}).get(group, {})
        owners = _owners(admin.describe_groups([group]).get(group, {}))
        topics = selection.routes(consumer.topics() if selection.by_pattern else [])
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
    rows = []
    for tp in partitions:
        offset = committed.get(tp)
        position = offset.offset if offset is not None and offset.offset >= 0 else None
        end = ends[tp]
        rows.append(PartitionStatus(
            direction=direction, group=group, topic=tp.topic, partition=tp.partition,
            committed=position, log_end=end,
            lag=None if position is None else max(0, end - position),
            owner=owners.get(tp),
        ))
    return rows


def _owners(description: dict) -> dict[TopicPartition, str]:
    """Partition → the member's static id (its actor name) or, failing that, its member id."""
    owners = {}
    for member in description.get("members", ()):
        who = member.get("group_instance_id") or member.get("member_id")
        for assigned in (member.get("member_assignment") or {}).get("assigned_partitions", ()):
            for partition in assigned["partitions"]:
                owners[TopicPartition(assigned["topic"], partition)] = who
    return owners


@dataclass(frozen=True)
class SyncedGroup:
    """A group the direction's group offset sync follows (`syncGroupOffsets`)."""

    direction: str
    synced_group: str
    state: str  # "synced", or "active on the target" (left alone while it has members there)
    behind: int | None  # records between its offsets on the target and its translated ones

    def as_json(self) -> dict:
        return asdict(self)


def synced_groups(config: ReplicatorConfig) -> list[SyncedGroup]:
    """Per direction with syncGroupOffsets on: its groups and how far behind each is."""
    from .group_sync import GroupSync

    rows = []
    for direction in config.enabled_directions():
        if not config.direction(direction).sync_group_offsets.enabled:
            continue
        sync = GroupSync(config, direction)
        sync.sync_once(write=False)
        figures = sync.figures
        for group in sorted(figures.seen):
            active = group in figures.active
            rows.append(SyncedGroup(direction, group, "active on the target" if active else "synced",
                                    None if active else figures.behind.get(group, 0)))
    return rows


def format_table(rows: list[PartitionStatus]) -> str:
    return table(("DIRECTION", "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                  "LAG", "OWNER"),
                 [(r.direction, r.group, r.topic, str(r.partition), dash(r.committed),
                   str(r.log_end), dash(r.lag), r.owner or "-") for r in rows])


def format_synced(rows: list[SyncedGroup]) -> str:
    return table(("DIRECTION", "SYNCED-GROUP", "STATE", "BEHIND"),
                 [(r.direction, r.synced_group, r.state, dash(r.behind)) for r in rows])
