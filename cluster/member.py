"""The Ray actor of one consumer-group member: a Flow running in a thread, copying the
topics that its direction's controller (cluster/controller.py) publishes.

Ray restarts the actor when its process dies (the supervisor starts it with
max_restarts=-1); the new process rejoins the group under the same static member
id, so it gets its partitions back and resumes from the group's committed offsets.
Nothing here needs to survive a restart: the progress lives in Kafka.

The config travels with the actor's creation task, which Ray keeps to restart the
actor: keep passwords in saslPasswordEnv so that only the variable's name travels.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import ray

from replicator import logs
from replicator.config import ReplicatorConfig
from replicator.errors import ConfigError
from replicator.flow import Flow, Health
from replicator.restarts import Restarts
from replicator.topics import Identities

from .controller import ControllerTopics
from .telemetry import Totals, exporter
from .worker import EXPORT_SECONDS, log_to_stderr, reconstructed

log = logging.getLogger("cluster.member")


@dataclass
class MemberStats:
    """One answer to the supervisor's poll."""

    name: str
    direction: str
    incarnation: str  # Ray's worker id: a new one each time Ray restarts the actor
    node_id: str
    health: Health
    totals: Totals
    lag: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # recent samples
    fatal: bool = False  # the flow stopped on a ConfigError: only an operator can fix it


@ray.remote
class Member:
    """Replicates one direction as one member of its consumer group."""

    def __init__(self, config: ReplicatorConfig, direction: str, name: str,
                 log_level: str = "INFO", log_format: str = "text"):
        log_to_stderr(log_level, log_format)
        logs.set_member(direction, name)
        self._config = config
        self._direction = direction
        self._name = name
        self._lock = threading.Lock()  # guards the switch to a new flow and each export
        self._stopping = threading.Event()
        self._fatal = False
        context = ray.get_runtime_context()
        self._incarnation = context.get_worker_id()
        self._node_id = context.get_node_id()
        self._exporter = exporter(direction, name)
        self._flow: Flow | None = None
        self._identities = Identities()  # kept across the flows, until Ray restarts the actor
        self._topics = ControllerTopics(direction, context.namespace)
        # A failed flow is replaced here: Ray restarts the actor only when its process dies.
        self._flows = Restarts(self._next_flow, restart_on_errors=True)
        if reconstructed(context):
            self._exporter.restarted()
            log.warning("%s: restarted by Ray; rejoining group %s as static member %s",
                        name, config.group(direction).group_id, name)
        self._runner = threading.Thread(target=self._run, name=f"flow-{name}", daemon=True)
        self._runner.start()
        threading.Thread(target=self._export_periodically, name=f"metrics-{name}",
                         daemon=True).start()

    def __repr__(self) -> str:
        # Ray prefixes the actor's log lines with this: "(sourceToTarget-0 pid=...)".
        return self._name

    def health(self) -> Health:
        return self._flow.health()

    def stats(self) -> MemberStats:
        totals = self._export()
        with self._lock:
            flow = self._flow
        snapshot = flow.metrics.snapshot()
        return MemberStats(
            name=self._name, direction=self._direction, incarnation=self._incarnation,
            node_id=self._node_id, health=flow.health(), totals=totals, lag=snapshot.lag,
            latency_ms=snapshot.latency_ms, fatal=self._fatal,
        )

    def rejoin(self) -> None:
        """Join the group again (the driver's repair for partitions left without an owner)."""
        self._flow.rejoin()

    def stop(self, timeout: float, leave_group: bool = False) -> Health:
        """Stop polling, commit what the target acknowledged, close; within `timeout`.
        `leave_group`: stopped for good, so the group hands its partitions over at once."""
        self._stopping.set()
        self._flows.stop(leave_group)
        self._runner.join(timeout)
        if self._runner.is_alive():
            log.warning("%s: did not stop within %.0fs", self._name, timeout)
        self._export()
        return self._flow.health()

    def _run(self) -> None:
        try:
            self._flows.run()
        except ConfigError as exc:
            log.error("%s: %s", self._name, exc)
            self._fatal = True

    def _next_flow(self) -> Flow:
        with self._lock:
            if self._flow is not None:  # a restart
                self._export_locked()  # the failed flow's last counts
                self._exporter.new_flow()
            self._flow = Flow(self._config, self._direction, self._name, identities=self._identities,
                              topics=self._topics)
            return self._flow

    def _export_periodically(self) -> None:
        while not self._stopping.wait(EXPORT_SECONDS):
            self._export()

    def _export(self) -> Totals:
        with self._lock:
            return self._export_locked()

    def _export_locked(self) -> Totals:
        flow = self._flow
        health = flow.health()
        return self._exporter.publish(flow.metrics.snapshot(), flow.metrics.drain_latencies(),
                                      len(health.assigned), list(health.stopped))
