"""What a record costs through kafka-python's consumer and producer: decode and encode.

Measured in this process with time.process_time() (all threads, so kafka-python's I/O
threads count too), on records of the data set:

- decode: a kafka-python consumer fetching and decoding records (what poll() costs);
- encode: a kafka-python producer sending them with our producer settings and flushing
  (what send() and the producer's I/O thread cost).

Their sum is the CPU per record of a kafka-python relay (the existing chart's loop,
`relay.py`): a reference for the rows' measured records per CPU-second. Our replicator's
data path uses neither: in both modes it fetches and produces record batches itself.
"""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ..config import parse_config
from . import data

NOTE = ("kafka-python's decode and encode only; our own loop's share is not measured "
        "(it needed the Flow's private fields)")


def _decode(bootstrap: str, topic: str, limit: int) -> tuple[list, float, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", max_partition_fetch_bytes=1 << 20)
    tps = [TopicPartition(topic, p) for p in range(data.PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    for tp in tps:
        consumer.position(tp)
    batches: list[dict] = []
    count = 0
    deadline = time.monotonic() + 120
    cpu = time.process_time()
    while count < limit and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500, max_records=2000)
        batches.append(polled)
        count += sum(len(b) for b in polled.values())
    cpu = time.process_time() - cpu
    consumer.close()
    return batches, cpu, count


def _encode(bootstrap: str, batches: list[dict], count: int) -> float:
    topic = f"bench.costs.{uuid.uuid4().hex[:6]}"
    data.create_topic(bootstrap, topic)
    config = parse_config({"sourceKafka": {"bootstrapServers": bootstrap},
                           "targetKafka": {"bootstrapServers": bootstrap},
                           "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "x"}]}}})
    p = config.producer
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_in_flight_requests_per_connection=1,
                             linger_ms=p.linger_ms, batch_size=p.batch_size, max_request_size=p.max_request_size)
    try:
        send = producer.send
        cpu = time.process_time()
        for polled in batches:
            for tp, records in polled.items():
                for r in records:
                    send(topic, r.value, r.key, r.headers, tp.partition, r.timestamp)
        producer.flush(timeout=120)
        return time.process_time() - cpu
    finally:
        producer.close(timeout=10)
        data.delete_topics(bootstrap, [topic])


def measure(bootstrap: str, topic: str, limit: int = 100_000) -> dict:
    """CPU microseconds per record of kafka-python's decode and encode, on `topic`'s records."""
    batches, decode_cpu, count = _decode(bootstrap, topic, limit)
    if not count:
        return {"records": 0, "note": NOTE}
    encode_cpu = _encode(bootstrap, batches, count)
    us = 1e6 / count
    result = {"records": count, "decode_us": decode_cpu * us, "encode_us": encode_cpu * us}
    result["floor_us"] = result["decode_us"] + result["encode_us"]
    result["floor_records_per_cpu_second"] = 1e6 / result["floor_us"]
    result["note"] = NOTE
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100_000),
                     indent=1))
