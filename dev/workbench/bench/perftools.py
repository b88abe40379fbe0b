"""The brokers' own limit: Kafka's producer and consumer performance tools
(org.apache.kafka:kafka-tools) on the same two clusters.

ProducerPerformance writes as many records of the same size to the target as the data
set holds (acks=all, the batching our producer uses); ConsumerPerformance reads the data
set from the source. A replicator cannot copy faster than the slower of the two.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ..sandbox import KAFKA_JVM_OPTS, java_executable
from . import jars
from .procstat import cpu_seconds

HEAP = ("-Xms256m", "-Xmx1g")
PRODUCER_PROPS = ("acks=all", "linger.ms=5", "batch.size=262144")


@dataclass
class ToolRun:
    records: int
    records_per_second: float | None
    mb_per_second: float | None
    cpu_seconds: float
    seconds: float
    ok: bool
    output_tail: str

    def as_json(self) -> dict:
        return asdict(self)


def _run(args: list[str], log: Path, timeout: float) -> tuple[str, float, float, bool]:
    log4j = log.parent / "tools-log4j2.xml"
    log4j.write_text('<?xml version="1.0"?><Configuration status="WARN"><Appenders>'
                     '<Console name="o" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console>'
                     '</Appenders><Loggers><Root level="WARN"><AppenderRef ref="o"/></Root></Loggers>'
                     '</Configuration>\n')
    command = [java_executable(), *HEAP, *KAFKA_JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}",
               "-cp", f"{jars.tools_libs()}/*", *args]
    started = time.monotonic()
    with open(log, "w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        cpu, ok = 0.0, True
        deadline = started + timeout
        while proc.poll() is None:
            cpu = max(cpu, cpu_seconds(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                ok = False
            time.sleep(0.1)
        out.seek(0)
        output = out.read()
    return output, cpu, time.monotonic() - started, ok and proc.returncode == 0


def produce(bootstrap: str, topic: str, records: int, size: int, log: Path, timeout: float) -> ToolRun:
    output, cpu, seconds, ok = _run(
        ["org.apache.kafka.tools.ProducerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
         "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
         "--command-property", *PRODUCER_PROPS], log, timeout)
    # "2000000 records sent, 412345.6 records/sec (39.32 MB/sec), ..." is the last summary line.
    found = re.findall(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", output)
    rate = mb = None
    if found and int(found[-1][0]) == records:
        rate, mb = float(found[-1][1]), float(found[-1][2]) * 1.048576  # MiB/s -> MB/s
    return ToolRun(records, rate, mb, cpu, seconds, ok and rate is not None, _tail(output))


def consume(bootstrap: str, topic: str, records: int, log: Path, timeout: float) -> ToolRun:
    output, cpu, seconds, ok = _run(
        ["org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
         "--num-records", str(records), "--timeout", str(int(timeout * 1000)),
         "--group", f"bench-ceiling-{uuid.uuid4().hex[:8]}",
         "--command-property", "fetch.max.bytes=52428800", "max.partition.fetch.bytes=1048576"],
        log, timeout + 30)
    rate = mb = None
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    #      rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    for line in output.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[4] or "x"):
            if int(cells[4]) >= records:
                mb, rate = float(cells[8]) * 1.048576, float(cells[9])
    return ToolRun(records, rate, mb, cpu, seconds, ok and rate is not None, _tail(output))


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
