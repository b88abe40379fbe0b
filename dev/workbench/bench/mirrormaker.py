"""MirrorMaker 2 in dedicated mode (org.apache.kafka.connect.mirror.MirrorMaker), as its
users run it, configured like our replicator: the same topics, the identity replication
policy (same topic names), tasks.max = our member count, acks=all. As shipped, or tuned
for throughput (TUNINGS) the way its operators' guides tune it, and with exactly-once
source support (KIP-618) or without."""

from __future__ import annotations


import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient

from ..sandbox import KAFKA_JVM_OPTS, java_executable
from . import jars
from .procstat import terminate

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"

# Client settings of a tuned MM2, by name; `{source}.consumer.*` and `{target}.producer.*`
# reach the clients of the source connector's tasks in dedicated mode (Kafka's "Geo-Replication"
# docs, "Configuring Geo-Replication"; Red Hat Streams for Apache Kafka, "Configuring MirrorMaker 2
# for high volumes of messages"). The bench data is stored uncompressed, so compression.type
# stays "none", as the source. The search (`--only mm2-search`) runs each on every data set; the
# `mirrormaker2-tuned` row uses DEFAULT_TUNING unless --mm2-tuning names another.
TUNINGS: dict[str, dict[str, dict[str, str]]] = {
    # The settings of the skeptic's run in issue 24: large batches lingering 5 ms, large
    # fetches that wait for 64 KiB or 50 ms, many records per poll.
    "throughput": {
        "producer": {"batch.size": "262144", "linger.ms": "5", "buffer.memory": "134217728",
                     "max.request.size": "2097152", "compression.type": "none",
                     "max.in.flight.requests.per.connection": "5"},
        "consumer": {"max.poll.records": "5000", "fetch.min.bytes": "65536", "fetch.max.wait.ms": "50",
                     "max.partition.fetch.bytes": "4194304"},
    },
    # Red Hat's example for high volumes: 320 KiB batches lingering 100 ms, 50 MB fetches.
    "streams-guide": {
        "producer": {"batch.size": "327680", "linger.ms": "100", "compression.type": "none"},
        "consumer": {"fetch.max.bytes": "52428800", "max.partition.fetch.bytes": "1048576",
                     "max.poll.records": "500"},
    },
    # Large batches sent as soon as they are ready (no linger), and fetches that do not wait:
    # throughput from batching alone, with the latency of the shipped settings.
    "no-linger": {
        "producer": {"batch.size": "262144", "linger.ms": "0", "buffer.memory": "134217728",
                     "max.request.size": "2097152", "compression.type": "none"},
        "consumer": {"max.poll.records": "5000", "max.partition.fetch.bytes": "4194304"},
    },
    # As "throughput", with twice the tasks per member count: more parallel copies on the cores.
    "throughput-2x-tasks": {
        "producer": {"batch.size": "262144", "linger.ms": "5", "buffer.memory": "134217728",
                     "max.request.size": "2097152", "compression.type": "none"},
        "consumer": {"max.poll.records": "5000", "fetch.min.bytes": "65536", "fetch.max.wait.ms": "50",
                     "max.partition.fetch.bytes": "4194304"},
        "tasks": {"factor": "2"},
    },
}
DEFAULT_TUNING = "throughput"
HEAP = ("-Xms256m", "-Xmx1g")

_LOG4J2 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
    <Logger name="org.apache.kafka.connect.mirror.MirrorMaker" level="INFO"/>
    <!-- Every config as it took effect ("ProducerConfig values: ..."): the evidence that a
         tuning reached the clients. -->
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="INFO"/>
  </Loggers>
</Configuration>
"""


def properties(source: str, target: str, topics: list[str], tasks: int, tag: str,
               groups: list[str] | None = None, flush_interval_ms: int | None = None,
               tuning: str | None = None, exactly_once: bool = False) -> str:
    """mm2.properties for one source->target flow. The cluster aliases carry `tag` so
    that each run has internal topics (and stored source offsets) of its own. With `groups`,
    checkpoints and group offset sync run for them, every second. `tuning`: one of TUNINGS."""
    src, tgt = f"source{tag}", f"target{tag}"
    tuned = TUNINGS[tuning] if tuning else {}
    tasks *= int(tuned.get("tasks", {}).get("factor", "1"))
    lines = [
        f"clusters = {src}, {tgt}",
        f"{src}.bootstrap.servers = {source}",
        f"{tgt}.bootstrap.servers = {target}",
        f"{src}->{tgt}.enabled = true",
        f"{tgt}->{src}.enabled = false",
        f"{src}->{tgt}.topics = {'|'.join(topics)}",
        "replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        f"tasks.max = {tasks}",
        # Delivery like ours: acks=all on the target (Connect's default for source tasks too).
        f"{tgt}.producer.acks = all",
        # Single-broker clusters: every topic MM2 creates has one replica.
        "replication.factor = 1",
        "offset-syncs.topic.replication.factor = 1",
        "checkpoints.topic.replication.factor = 1",
        "heartbeats.topic.replication.factor = 1",
        "config.storage.replication.factor = 1",
        "offset.storage.replication.factor = 1",
        "status.storage.replication.factor = 1",
        # Not measured in the throughput rows: consumer-group offset translation, heartbeats,
        # ACLs. (With checkpoints off, MM2 logs once that it does not start MirrorCheckpointConnector.)
        *(_group_sync(groups) if groups else [
            "emit.checkpoints.enabled = false",
            "refresh.groups.enabled = false",
            "sync.group.offsets.enabled = false",
        ]),
        "emit.heartbeats.enabled = false",
        "sync.topic.acls.enabled = false",
        "sync.topic.configs.enabled = true",
        "refresh.topics.interval.seconds = 5",
        # The jars on the class path declare their plugins: skip the slow class-path scan.
        "plugin.discovery = service_load",
        f"{tgt}.plugin.discovery = service_load",
        # How often Connect stores the source offsets it copied (its commit).
        *([f"offset.flush.interval.ms = {flush_interval_ms}"] if flush_interval_ms else []),
        *(f"{tgt}.producer.{name} = {value}" for name, value in tuned.get("producer", {}).items()),
        *(f"{src}.consumer.{name} = {value}" for name, value in tuned.get("consumer", {}).items()),
        *(_exactly_once(src, tgt) if exactly_once else []),
    ]
    return "\n".join(lines) + "\n"


def _exactly_once(src: str, tgt: str) -> list[str]:
    """Exactly-once delivery to the target as Kafka's geo-replication docs set it up for a
    dedicated cluster: each task writes its copies and its source offsets in one transaction.
    Connect fences a task's earlier producers through the leader's REST API (KIP-710's
    internal REST server; on loopback, on a free port). Without a read_committed consumer the
    source connector declares no exactly-once support."""
    return [
        f"{tgt}.exactly.once.source.support = enabled",
        "dedicated.mode.enable.internal.rest = true",
        "listeners = http://127.0.0.1:0",
        f"{src}.consumer.isolation.level = read_committed",
    ]


def _group_sync(groups: list[str]) -> list[str]:
    """Checkpoints and group offset sync as documented (KIP-545), at a 1 s pace."""
    return [
        "emit.checkpoints.enabled = true",
        "emit.checkpoints.interval.seconds = 1",
        "refresh.groups.enabled = true",
        "refresh.groups.interval.seconds = 1",
        f"groups = {'|'.join(groups)}",
        "sync.group.offsets.enabled = true",
        "sync.group.offsets.interval.seconds = 1",
    ]


class MirrorMaker:
    def __init__(self, source: str, target: str, topics: list[str], tasks: int, work_dir: Path, tag: str,
                 groups: list[str] | None = None, flush_interval_ms: int | None = None,
                 tuning: str | None = None, exactly_once: bool = False):
        self.source, self.target, self.topics, self.tasks = source, target, topics, tasks
        self.work_dir, self.tag, self.groups = work_dir, tag, groups
        self.flush_interval_ms = flush_interval_ms
        self.tuning, self.exactly_once = tuning, exactly_once
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def start(self) -> "MirrorMaker":
        libs = jars.mirror_maker_libs()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / f"mm2-{self.tag}.properties"
        config.write_text(properties(self.source, self.target, self.topics, self.tasks, self.tag, self.groups,
                                     self.flush_interval_ms, self.tuning, self.exactly_once))
        log4j = self.work_dir / "mm2-log4j2.xml"
        log4j.write_text(_LOG4J2)
        command = [java_executable(), *HEAP, *KAFKA_JVM_OPTS,
                   f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*", MAIN_CLASS, str(config)]
        out = open(self.work_dir / f"mm2-{self.tag}.log", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.work_dir)
        out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: its internal topics stay for the next process of this tag."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self._drop_internal_topics()
        return code

    def _drop_internal_topics(self) -> None:
        """MM2's own topics of this run (configs, offsets, status, offset-syncs)."""
        for bootstrap in (self.source, self.target):
            try:
                admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            except Exception:
                continue
            try:
                mine = [t for t in admin.list_topics() if t.startswith("mm2-") and self.tag in t]
                if mine:
                    admin.delete_topics(mine)
            except Exception:
                pass
            finally:
                admin.close()


def client_settings(work_dir: Path, tag: str) -> dict[str, list[str]]:
    """The values the run's Kafka clients logged for the settings a tuning sets (each client
    logs its own; the copying task's producer and consumer are among them)."""
    names = {name for tuning in TUNINGS.values() for side in ("producer", "consumer")
             for name in tuning.get(side, {})}
    seen: dict[str, set[str]] = {}
    try:
        text = (work_dir / f"mm2-{tag}.log").read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        name, _, value = line.strip().partition(" = ")
        if name in names:
            seen.setdefault(name, set()).add(value)
    return {name: sorted(values) for name, values in sorted(seen.items())}


# What shows exactly-once at work in a copying task's clients.
EXACTLY_ONCE_SETTINGS = ("transactional.id", "enable.idempotence", "isolation.level")
_CLIENT_CONFIGS = ("ProducerConfig values:", "ConsumerConfig values:")


def task_clients(work_dir: Path, tag: str) -> dict[str, dict[str, str]]:
    """The source connector's task clients by client.id, with their EXACTLY_ONCE_SETTINGS as
    they logged them: the producer writing the copies (`connector-producer-MirrorSourceConnector-N`)
    and the consumer reading the source (`...|MirrorSourceConnector-N|replication-consumer`)."""
    try:
        lines = (work_dir / f"mm2-{tag}.log").read_text(errors="replace").splitlines()
    except OSError:
        return {}
    clients: dict[str, dict[str, str]] = {}
    block: dict[str, str] | None = None
    for line in lines:
        if line.rstrip().endswith(_CLIENT_CONFIGS):
            block = {}
        elif block is not None and line.startswith("\t"):
            name, _, value = line.strip().partition(" = ")
            block[name] = value
        elif block is not None:
            client = block.get("client.id", "")
            if _copies(client):
                clients[client] = {name: block.get(name, "") for name in EXACTLY_ONCE_SETTINGS}
            block = None
    return dict(sorted(clients.items()))


def _copies(client_id: str) -> bool:
    """Whether the client is one of the source connector's tasks' (not Connect's own)."""
    return client_id.startswith("connector-producer-MirrorSourceConnector-") or (
        "|MirrorSourceConnector-" in client_id and client_id.endswith("|replication-consumer"))


def log_tail(work_dir: Path, tag: str, lines: int = 20) -> str:
    path = work_dir / f"mm2-{tag}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



