"""MirrorMaker 2 in dedicated mode (org.apache.kafka.connect.mirror.MirrorMaker), as its
users run it, configured like our replicator: the same topics, the identity replication
policy (same topic names), tasks.max = our member count, acks=all."""

from __future__ import annotations


import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient

from ..sandbox import java_executable
from . import jars
from .procstat import terminate

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
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
  </Loggers>
</Configuration>
"""


def properties(source: str, target: str, topics: list[str], tasks: int, tag: str,
               groups: list[str] | None = None, flush_interval_ms: int | None = None) -> str:
    """mm2.properties for one source->target flow. The cluster aliases carry `tag` so
    that each run has internal topics (and stored source offsets) of its own. With `groups`,
    checkpoints and group offset sync run for them, every second."""
    src, tgt = f"source{tag}", f"target{tag}"
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
    ]
    return "\n".join(lines) + "\n"


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
                 groups: list[str] | None = None, flush_interval_ms: int | None = None):
        self.source, self.target, self.topics, self.tasks = source, target, topics, tasks
        self.work_dir, self.tag, self.groups = work_dir, tag, groups
        self.flush_interval_ms = flush_interval_ms
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
                                     self.flush_interval_ms))
        log4j = self.work_dir / "mm2-log4j2.xml"
        log4j.write_text(_LOG4J2)
        command = [java_executable(), *HEAP, "-Djava.awt.headless=true",
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


def log_tail(work_dir: Path, tag: str, lines: int = 20) -> str:
    path = work_dir / f"mm2-{tag}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



