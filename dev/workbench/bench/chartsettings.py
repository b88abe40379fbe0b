"""The existing chart's replication loop, re-created faithfully for the comparison row.

The chart users run today copies with a kafka-python consumer (auto-commit every 1 s)
and a producer with ``linger_ms=0`` and ``batch_size=1024`` that is flushed after every
message. kafka-python's defaults otherwise (acks=1). The one liberty taken: records keep
their source partition, so that the copy can be verified partition by partition like the
others (the chart let the producer hash keys, which costs the same).

Run as its own process: ``python -m workbench.bench.chartsettings SOURCE TARGET TOPIC
TARGET_TOPIC RECORDS SECONDS``; it stops after RECORDS records or SECONDS seconds.
"""

from __future__ import annotations

import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer


def copy_like_chart(source: str, target: str, topic: str, target_topic: str, records: int,
                    seconds: float) -> int:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=source, group_id=f"bench-chart-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=True, auto_commit_interval_ms=1000, auto_offset_reset="earliest",
    )
    producer = KafkaProducer(bootstrap_servers=target, linger_ms=0, batch_size=1024)
    copied = 0
    deadline = time.monotonic() + seconds
    try:
        while copied < records and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                for record in batch:
                    producer.send(target_topic, value=record.value, key=record.key,
                                  headers=record.headers, partition=tp.partition,
                                  timestamp_ms=record.timestamp)
                    producer.flush()
                    copied += 1
    finally:
        producer.close(timeout=10)
        consumer.close()
    return copied


if __name__ == "__main__":
    src, tgt, topic, target_topic, n, secs = sys.argv[1:7]
    copy_like_chart(src, tgt, topic, target_topic, int(n), float(secs))
