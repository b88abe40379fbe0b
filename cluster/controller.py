"""The Ray actor of one direction's controller, and the members' view of it.

The supervisor starts one controller per enabled direction beside its members, with
max_restarts=-1: Ray restarts one whose process dies, and the new one lists the topics
again at once. It exports the direction's backlog (ray_kafka_replicator_committed_lag,
_lag_seconds, _partitions_ownerless) and its group offset sync's figures as Ray metrics:
from an actor, they reach Prometheus as the members' do (the driver usually joins with Ray
Client from a pod of its own, whose metrics reach no Ray metrics agent). A member asks its controller for the topics it publishes, in the
background of its loop; while the controller is away (restarting) it copies on with the
topics it was last told of.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import ray
from ray.exceptions import RayError

from replicator import controller, logs
from replicator.config import ReplicatorConfig
from replicator.export import BacklogExporter
from replicator.topics import Synced

from .plan import controller_name
from .telemetry import RayMetrics, exporter
from .worker import EXPORT_SECONDS, log_to_stderr, reconstructed

log = logging.getLogger("cluster.controller")

ASK_SECONDS = 1.0  # how often a member asks its controller for the topics
SOONEST_ASK_SECONDS = 0.5  # a member's early asks, at most this often


@dataclass
class ControllerStats:
    """One answer to the supervisor's poll."""

    name: str
    incarnation: str  # Ray's worker id: a new one each time Ray restarts the actor


@ray.remote
class Controller:
    """Runs one direction's controller in a thread; answers the members' questions."""

    def __init__(self, config: ReplicatorConfig, direction: str, log_level: str = "INFO",
                 log_format: str = "text"):
        name = controller_name(direction)
        log_to_stderr(log_level, log_format)
        logs.set_member(direction, name)
        self._name = name
        context = ray.get_runtime_context()
        self._incarnation = context.get_worker_id()
        self._exporter = exporter(direction, name)
        self._backlog_exporter = BacklogExporter(RayMetrics(), direction)
        self._exported_backlog = None
        self._lock = threading.Lock()  # the exporters are not thread-safe
        self._stopping = threading.Event()
        if reconstructed(context):
            self._exporter.restarted()
            log.warning("%s: restarted by Ray; listing the topics again", name)
        self._controller = controller.Controller(config, direction).start()
        threading.Thread(target=self._export_periodically, name=f"metrics-{name}", daemon=True).start()

    def __repr__(self) -> str:
        return self._name  # Ray prefixes the actor's log lines with it

    def topics(self) -> Synced | None:
        return self._controller.current()

    def refresh_soon(self) -> None:
        self._controller.refresh_soon()

    def stats(self) -> ControllerStats:
        self._export()
        return ControllerStats(self._name, self._incarnation)

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._controller.close(timeout)
        self._export()

    def _export_periodically(self) -> None:
        while not self._stopping.wait(EXPORT_SECONDS):
            self._export()

    def _export(self) -> None:
        group_sync, backlog = self._controller.group_sync, self._controller.backlog
        with self._lock:
            if group_sync is not None:
                self._exporter.publish_sync(group_sync.figures)
            if backlog is not None and backlog is not self._exported_backlog:
                self._backlog_exporter.publish(backlog)
                self._exported_backlog = backlog


class ControllerTopics:
    """A member's view of its direction's controller (a replicator.controller.TopicSource):
    the topics it published last, asked for without holding up the member's loop."""

    def __init__(self, direction: str, namespace: str):
        self._name = controller_name(direction)
        self._namespace = namespace
        self._actor = None
        self._asking = None  # the question on its way
        self._next_ask = 0.0
        self._next_early_ask = 0.0
        self._synced: Synced | None = None
        self._trouble: str | None = None  # said once, until the controller answers again

    def current(self) -> Synced | None:
        if self._asking is not None:
            ready, _ = ray.wait([self._asking], timeout=0)
            if ready:
                self._answered(self._asking)
                self._asking = None
        if self._asking is None and time.monotonic() >= self._next_ask:
            self._next_ask = time.monotonic() + ASK_SECONDS
            actor = self._find()
            if actor is not None:
                self._asking = actor.topics.remote()
        return self._synced

    def refresh_soon(self) -> None:
        now = time.monotonic()
        actor = self._find()
        if actor is None or now < self._next_early_ask:
            return
        self._next_early_ask = now + SOONEST_ASK_SECONDS
        actor.refresh_soon.remote()
        self._next_ask = min(self._next_ask, now + SOONEST_ASK_SECONDS)

    def _answered(self, ref) -> None:
        try:
            synced = ray.get(ref)
        except RayError as exc:
            self._say(f"{self._name} did not answer ({type(exc).__name__}); copying on with the "
                      "topics it published last")
            self._actor = None  # found again by name: the driver may have replaced it
            return
        if self._trouble is not None:
            log.info("%s answers again", self._name)
            self._trouble = None
        if synced is not None and synced != self._synced:
            self._synced = synced

    def _find(self):
        if self._actor is None:
            try:
                self._actor = ray.get_actor(self._name, namespace=self._namespace)
            except ValueError:
                self._say(f"{self._name} is not running; copying on with the topics it published last")
        return self._actor

    def _say(self, trouble: str) -> None:
        if trouble != self._trouble:
            self._trouble = trouble
            log.warning("%s", trouble)
