"""Kafka inside the real node's network namespace: run there with `nsenter -n` (NodePlane.run).

    pod_kafka.py up STATE HOST            start a sandbox listening on HOST; print its endpoints
    pod_kafka.py down STATE               stop it
    pod_kafka.py topic BOOTSTRAP TOPIC PARTITIONS
    pod_kafka.py produce BOOTSTRAP TOPIC FIRST COUNT [RATE]
                                          records FIRST..FIRST+COUNT-1, value "record-<n>", keyed
                                          by n; RATE per second (0: all at once); prints a count
    pod_kafka.py count BOOTSTRAP TOPIC FIRST COUNT TIMEOUT
                                          read the topic (read_committed) until every record of
                                          FIRST..FIRST+COUNT-1 is there or TIMEOUT s pass; print
                                          {"records", "distinct", "lost", "duplicates", "others"}
    pod_kafka.py lag BOOTSTRAP GROUP TOPIC  the group's committed offsets against the end offsets

The test process itself stays outside the namespace and never sends a packet to its addresses.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def up(state: str, host: str) -> None:
    from workbench.sandbox import Sandbox

    info = Sandbox(Path(state), host=host).up(sasl=True)
    print(json.dumps(info.as_json()))


def down(state: str) -> None:
    from workbench.sandbox import Sandbox

    Sandbox(Path(state)).down()
    print(json.dumps({"down": True}))


def topic(bootstrap: str, name: str, partitions: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": int(partitions)}}, wait_for_metadata=True)
    finally:
        admin.close()
    print(json.dumps({"created": name}))


def produce(bootstrap: str, name: str, first: str, count: str, rate: str = "0") -> None:
    from kafka import KafkaProducer

    first_n, count_n, per_second = int(first), int(count), float(rate)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    started = time.monotonic()
    futures = []
    for i, n in enumerate(range(first_n, first_n + count_n)):
        futures.append(producer.send(name, key=str(n).encode(), value=f"record-{n}".encode()))
        if per_second:
            delay = started + (i + 1) / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    producer.flush()
    for future in futures:
        future.get(timeout=60)
    producer.close()
    print(json.dumps({"produced": count_n, "seconds": round(time.monotonic() - started, 1)}))


def count(bootstrap: str, name: str, first: str, count_: str, timeout: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    wanted = range(int(first), int(first) + int(count_))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    seen: collections.Counter = collections.Counter()
    deadline = time.monotonic() + float(timeout)
    try:
        while not consumer.partitions_for_topic(name):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while True:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    seen[int(record.value.decode().split("-", 1)[1])] += 1
            if all(n in seen for n in wanted) or time.monotonic() > deadline:
                break
    finally:
        consumer.close()
    lost = [n for n in wanted if n not in seen]
    print(json.dumps({
        "records": sum(seen.values()), "distinct": len(seen), "lost": len(lost), "lost_first": lost[:10],
        "duplicates": sum(seen[n] - 1 for n in wanted if n in seen),
        "others": len([n for n in seen if n not in wanted]),  # records outside FIRST..FIRST+COUNT-1
    }))


def lag(bootstrap: str, group: str, name: str) -> None:
    """The group's committed offsets in the topic against its end offsets."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = {tp.partition: meta.offset for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items()
                     if tp.topic == name}
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        end = {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        admin.close()
        consumer.close()
    print(json.dumps({"committed": committed, "end": end,
                      "lag": sum(end[p] - committed.get(p, 0) for p in end)}))


def members(bootstrap: str, group: str) -> None:
    """The group's members (their instance ids) and the partitions each is assigned."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    owned = {}
    for member in described.get("members") or []:
        assignment = member.get("member_assignment") or {}
        name = member.get("group_instance_id") or member["member_id"]
        owned[name] = sorted(f"{tp['topic']}-{p}" for tp in assignment.get("assigned_partitions", [])
                             for p in tp["partitions"])
    print(json.dumps({"state": described.get("group_state"), "members": owned}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"up": up, "down": down, "topic": topic, "produce": produce, "count": count, "lag": lag,
     "members": members}[command](*args)
