"""Starts a plan's members, and a controller per direction, as Ray actors; watches them,
and stops them gracefully.

The driver and the demo both run one Supervisor. It keeps no state that replication
needs: a new supervisor (after a driver restart) starts fresh actors, which resume
from the offsets their consumer groups committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError

from replicator.config import ReplicatorConfig
from replicator.errors import ReplicatorError
from replicator.health import not_ready
from replicator.metrics import percentile

from .controller import Controller, ControllerStats
from .member import Member, MemberStats
from .plan import CONTROLLER_PIN_SHARE, NAMESPACE, ControllerPlan, MemberPlan, controllers

log = logging.getLogger("cluster.supervisor")

CALL_TIMEOUT_SECONDS = 10.0
# A stopped or crashed driver's actors hold their names until Ray has cleaned them up.
NAME_WAIT_SECONDS = 60.0
# Calls to a member that Ray is restarting wait for the new process instead of failing.
MAX_TASK_RETRIES = 3


@dataclass
class DirectionStatus:
    """One direction at one poll: what the live view and the progress line show."""

    direction: str
    planned: int
    running: int
    nodes: int  # Ray nodes the running members are on
    replicated: int  # records, since this supervisor started
    rate: float  # records per second since the previous poll
    lag: int
    p50_ms: float | None
    p99_ms: float | None
    restarts: int
    errors: int

    def line(self) -> str:
        latency = ("latency -" if self.p50_ms is None else
                   f"latency p50 {self.p50_ms:.0f} ms p99 {self.p99_ms:.0f} ms")
        return (f"{self.direction}: {self.running}/{self.planned} members "
                f"({self.nodes} node{'' if self.nodes == 1 else 's'}), "
                f"{self.rate:.0f} records/s, lag {self.lag}, {latency}, "
                f"{self.replicated} replicated, {self.restarts} restarts, {self.errors} errors")


@dataclass
class _Watched:
    """What the supervisor remembers of one member between polls."""

    plan: MemberPlan
    actor: ray.actor.ActorHandle
    incarnation: str | None = None
    counted: int = 0  # records of earlier incarnations
    last: MemberStats | None = None
    trouble: str | None = None  # the last problem logged, so that it is logged once
    gone: bool = False
    answering: bool = False  # it answered the last poll
    reported: set[str] = field(default_factory=set)  # stopped partitions and topics already logged

    def replicated(self) -> int:
        return self.counted + (self.last.totals.records if self.last else 0)


@dataclass
class _WatchedController:
    """What the supervisor remembers of one controller between polls."""

    plan: ControllerPlan
    actor: ray.actor.ActorHandle
    pinned: bool  # started on a node with its direction's pin
    incarnation: str | None = None
    trouble: str | None = None


class ActorNameTaken(ReplicatorError):
    """Another driver's member holds the name in this namespace."""


class Supervisor:
    """The members of one replicator config, as Ray actors in one namespace."""

    def __init__(self, config: ReplicatorConfig, namespace: str = NAMESPACE,
                 log_level: str = "INFO", log_format: str = "text"):
        self.config = config
        self.namespace = namespace
        self.log_level = log_level
        self.log_format = log_format
        self.restarts: Counter[str] = Counter()
        self.fatal: dict[str, str] = {}  # member → the config error that stopped it
        self._members: dict[str, _Watched] = {}
        self._controllers: dict[str, _WatchedController] = {}
        self._replicated: Counter[str] = Counter()  # at the previous poll
        self._retired: Counter[str] = Counter()  # records of members stopped by apply()
        self._polled_at = time.monotonic()

    def apply(self, members: list[MemberPlan]) -> None:
        """Start the members that are missing and stop the ones not in `members`; and the
        controller of each enabled direction, first, since the members ask it for their topics.
        A controller started before any node had its direction's pin moves onto one once
        a node has it."""
        unpinned = [w for w in self._controllers.values() if not w.pinned]
        resources = ray.cluster_resources() if unpinned else {}
        for watched in unpinned:
            if watched.plan.pin in resources:
                self._move_controller(watched)
        for planned in controllers(self.config):
            if planned.name not in self._controllers:
                self._controllers[planned.name] = self._start_controller(planned)
        wanted = {member.name for member in members}
        surplus = [name for name in self._members if name not in wanted]
        if surplus:  # scaled down: they leave the group for good
            self._stop(surplus, self.config.shutdown_grace_period_seconds, leave_group=True)
        for member in members:
            if member.name not in self._members:
                self._members[member.name] = _Watched(member, self._start(member))

    def actor(self, name: str) -> ray.actor.ActorHandle:
        """A member's actor, or a controller's (controller-<direction>)."""
        watched = self._members.get(name) or self._controllers[name]
        return watched.actor

    def poll(self) -> list[DirectionStatus]:
        """Ask every member and controller for its stats; log restarts and trouble; sum up
        per direction."""
        asked = {name: w.actor.stats.remote() for name, w in self._members.items() if not w.gone}
        controllers = {name: w.actor.stats.remote() for name, w in self._controllers.items()}
        waited = list(asked.values()) + list(controllers.values())
        ready, _ = ray.wait(waited, num_returns=len(waited), timeout=CALL_TIMEOUT_SECONDS)
        answered = set(ready)
        for name, ref in controllers.items():
            self._observe_controller(self._controllers[name], ref if ref in answered else None)
        running: dict[str, MemberStats] = {}
        for name, ref in asked.items():
            watched = self._members[name]
            watched.answering = False
            if ref not in answered:
                self._trouble(watched, f"{name} is not answering within {CALL_TIMEOUT_SECONDS:.0f}s")
                continue
            try:
                stats = ray.get(ref)
            except RayActorError as exc:
                self._lost(watched, exc)
                continue
            except Exception as exc:  # a control loop reports and goes on
                self._trouble(watched, f"{name} did not answer: {_described(exc)}")
                continue
            self._observe(watched, stats)
            if stats.health.state == "running":
                running[name] = stats
        return self._statuses(running)

    def not_ready(self, members: list[MemberPlan]) -> list[str]:
        """Why the planned members are not all replicating, as of the last poll: each must
        answer (its actor ALIVE), have its assignment and have committed within the bound."""
        problems = []
        for member in members:
            watched = self._members.get(member.name)
            if watched is None or watched.gone:
                problems.append(f"{member.name}: not running")
            elif not watched.answering or watched.last is None:
                problems.append(watched.trouble or f"{member.name}: has not answered yet")
            else:
                problems += not_ready(watched.last.health)
        return problems

    def rejoin(self, direction: str) -> None:
        """Ask every member of `direction` to join its group again; its leader's join makes
        the group rebalance and give out what nobody owns."""
        for watched in self._members.values():
            if watched.plan.direction == direction and not watched.gone:
                watched.actor.rejoin.remote()

    def stop(self, grace: float) -> None:
        """Stop every member within `grace` seconds, killing those that do not; then the
        controllers."""
        self._stop(list(self._members), grace)
        asked = [w.actor.stop.remote(CALL_TIMEOUT_SECONDS) for w in self._controllers.values()]
        if asked:
            ray.wait(asked, num_returns=len(asked), timeout=CALL_TIMEOUT_SECONDS * 1.5)
        for name, watched in self._controllers.items():
            ray.kill(watched.actor, no_restart=True)
            log.info("%s stopped", name)
        self._controllers = {}

    def _start_controller(self, planned: ControllerPlan) -> _WatchedController:
        options = dict(name=planned.name, namespace=self.namespace, max_restarts=-1,
                       max_task_retries=MAX_TASK_RETRIES, num_cpus=planned.num_cpus)
        pinned = planned.pin in ray.cluster_resources()
        if pinned:
            options["resources"] = {planned.pin: CONTROLLER_PIN_SHARE}
        actor = self._create(Controller, planned.name, options, planned.direction)
        log.info("started %s (%s CPU%s)", planned.name, planned.num_cpus,
                 f", on a node with {planned.pin}" if pinned else "")
        return _WatchedController(planned, actor, pinned)

    def _move_controller(self, watched: _WatchedController) -> None:
        """Replace a controller that started where it happened to fit (the driver came up
        before the workers: on the chart's head, say) by one on a node with its pin. It
        keeps nothing that a new one would miss; the members copy on meanwhile."""
        name = watched.plan.name
        log.info("a node with %s has joined: moving %s onto it", watched.plan.pin, name)
        try:
            ray.get(watched.actor.stop.remote(CALL_TIMEOUT_SECONDS), timeout=CALL_TIMEOUT_SECONDS * 1.5)
        except Exception as exc:  # it goes either way
            log.warning("%s did not stop cleanly: %s", name, _described(exc))
        ray.kill(watched.actor, no_restart=True)
        self._controllers[name] = self._start_controller(watched.plan)

    def _observe_controller(self, watched: _WatchedController, ref) -> None:
        name = watched.plan.name
        if ref is None:
            self._trouble(watched, f"{name} is not answering within {CALL_TIMEOUT_SECONDS:.0f}s")
            return
        try:
            stats: ControllerStats = ray.get(ref)
        except RayActorError as exc:
            self._trouble(watched, f"{name} is unavailable, Ray is restarting it: {_first_line(exc)}")
            return
        except Exception as exc:  # a control loop reports and goes on
            self._trouble(watched, f"{name} did not answer: {_described(exc)}")
            return
        if watched.incarnation not in (None, stats.incarnation):
            log.warning("%s was restarted by Ray; the members copy on with the topics it published "
                        "last until it lists them again", name)
        watched.incarnation = stats.incarnation
        if watched.trouble is not None:
            log.info("%s is answering again", name)
            watched.trouble = None

    def _start(self, member: MemberPlan) -> ray.actor.ActorHandle:
        options = dict(
            name=member.name,
            namespace=self.namespace,
            # Owned by this driver (not detached): when the driver goes, so do its actors,
            # and the next driver starts the members of its own config.
            max_restarts=-1,
            max_task_retries=MAX_TASK_RETRIES,
            num_cpus=member.num_cpus,
            scheduling_strategy="SPREAD",  # members on different nodes, where there are several
        )
        if member.memory:
            options["memory"] = member.memory
        actor = self._create(Member, member.name, options, member.direction, member.name)
        log.info("started %s (%s CPU%s)", member.name, member.num_cpus,
                 f", {member.memory} bytes memory" if member.memory else "")
        return actor

    def _create(self, actor_class, name: str, options: dict, *args) -> ray.actor.ActorHandle:
        """A new actor under `name`, once an earlier driver's has gone."""
        deadline = time.monotonic() + NAME_WAIT_SECONDS
        while True:
            try:
                return actor_class.options(**options).remote(
                    self.config, *args, self.log_level, self.log_format)
            except ValueError as exc:  # the name is taken
                if time.monotonic() > deadline:
                    raise ActorNameTaken(
                        f"Ray actor {name!r} still exists in namespace {self.namespace!r} "
                        f"after {NAME_WAIT_SECONDS:.0f}s: another replicator driver runs in this "
                        "namespace; stop it, or give this one its own --namespace") from exc
                log.info("waiting for the previous %s to go (%s)", name, exc)
                time.sleep(2)

    def _stop(self, names: list[str], grace: float, leave_group: bool = False) -> None:
        # Members get most of the grace period; the rest is for killing the stragglers.
        timeout = grace * 0.8
        asked = {name: self._members[name].actor.stop.remote(timeout, leave_group)
                 for name in names if not self._members[name].gone}
        ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=grace * 0.9)
        answered = set(ready)
        for name, ref in asked.items():
            if ref not in answered:
                log.warning("%s did not stop within %.0fs; killing it", name, grace * 0.9)
                continue
            try:
                log.info("%s stopped (%s)", name, ray.get(ref).state)
            except RayActorError as exc:
                log.warning("%s died while stopping: %s", name, _first_line(exc))
            except Exception as exc:  # the others still have to be stopped
                log.warning("%s did not stop cleanly: %s", name, _described(exc))
        for name in names:
            watched = self._members.pop(name)
            ray.kill(watched.actor, no_restart=True)
            self._retired[watched.plan.direction] += watched.replicated()

    def _observe(self, watched: _Watched, stats: MemberStats) -> None:
        name = watched.plan.name
        if watched.incarnation not in (None, stats.incarnation):
            self.restarts[watched.plan.direction] += 1
            watched.counted = watched.replicated()
            log.warning("%s was restarted by Ray (%d restarts in %s so far)", name,
                        self.restarts[watched.plan.direction], watched.plan.direction)
        watched.incarnation = stats.incarnation
        before = watched.last.health.generation if watched.last else -1
        watched.last = stats
        watched.answering = True
        health = stats.health
        if health.generation != before and health.generation >= 0:
            # The members log each rebalance too; this line is the driver's own, so that its
            # output has it whatever Ray forwards of theirs.
            log.info("%s: rebalance: group %s generation %d, partition assignment now %s", name,
                     self.config.group(watched.plan.direction).group_id, health.generation,
                     health.assigned)
        if stats.fatal:
            self.fatal[name] = health.error or "config error"
        elif health.state == "failed":
            self._trouble(watched, f"{name} failed: {health.error}; it starts its flow again")
        elif watched.trouble is not None and health.state == "running":
            log.info("%s is running again", name)
            watched.trouble = None
        for partition, error in health.stopped.items():
            if partition not in watched.reported:
                watched.reported.add(partition)
                # A partition ("orders[3]"), or a whole topic the flow refused ("orders").
                log.error("%s: %s is stopped: %s", name, partition, error)

    def _lost(self, watched: _Watched, exc: RayActorError) -> None:
        name = watched.plan.name
        try:
            ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            # Ray restarts every crash (max_restarts=-1): an actor that is gone for good
            # was killed on purpose (ray.kill(..., no_restart=True)) and stays gone.
            watched.gone = True
            group = self.config.group(watched.plan.direction)
            log.error("%s is gone for good and is not replaced; the other members of group %s "
                      "take over its partitions once its session expires (sessionTimeoutMs %d)",
                      name, group.group_id, group.session_timeout_ms)
            return
        self._trouble(watched, f"{name} is unavailable, Ray is restarting it: {_first_line(exc)}")

    def _trouble(self, watched: _Watched | _WatchedController, message: str) -> None:
        if watched.trouble != message:
            watched.trouble = message
            log.warning("%s", message)

    def _statuses(self, running: dict[str, MemberStats]) -> list[DirectionStatus]:
        now = time.monotonic()
        elapsed = max(now - self._polled_at, 1e-6)
        self._polled_at = now
        statuses = []
        for direction in self.config.enabled_directions():
            members = [w for w in self._members.values() if w.plan.direction == direction]
            replicated = self._retired[direction] + sum(w.replicated() for w in members)
            rate = max(0, replicated - self._replicated[direction]) / elapsed
            self._replicated[direction] = replicated
            current = [stats for stats in running.values() if stats.direction == direction]
            latencies = [ms for stats in current for ms in stats.latency_ms]
            statuses.append(DirectionStatus(
                direction=direction,
                planned=len(members),
                running=len(current),
                nodes=len({stats.node_id for stats in current}),
                replicated=replicated,
                rate=rate,
                lag=sum(sum(stats.lag.values()) for stats in current),
                p50_ms=percentile(latencies, 0.5),
                p99_ms=percentile(latencies, 0.99),
                restarts=self.restarts[direction],
                errors=sum(w.last.totals.errors for w in members if w.last),
            ))
        return statuses


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _described(exc: BaseException) -> str:
    """What went wrong in a member's method (a RayTaskError carries it as its cause)."""
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {_first_line(cause)}"
