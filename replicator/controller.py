"""The controller of one direction: its periodic jobs, in one loop, on a schedule.

As MirrorMaker 2's connector schedules what its tasks do not (topics, configs, ACLs), one
controller per direction lists the source topics, creates and grows their targets, keeps
their configs and ACLs in step, syncs the chosen groups' offsets and measures the
direction's backlog; the direction's members only copy. It publishes what the last topic
sync found (`current()`), which the members follow, and the last backlog measured
(`backlog`), which its process exports. Every job is idempotent, so two controllers of one
direction (two `replicate` processes) do the same work twice, not different work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

from kafka.errors import KafkaError

from . import link
from .acl_sync import AclSync
from .backlog import MEASURE_SECONDS, Backlog, BacklogFigures
from .config import ReplicatorConfig
from .config_sync import ConfigSync
from .errors import ReplicatorError
from .group_sync import GroupSync
from .selection import Selection
from .topics import Synced, TopicSync

log = logging.getLogger(__name__)

TOPICS = "topics"
GROUP_OFFSETS = "group offsets"
ACLS = "ACL sync"
BACKLOG = "backlog"
TOPIC_SYNC_RETRY_SECONDS = 5.0  # a failed topic sync (a broker restarting) is tried again this soon
# A job asked for early runs no sooner than this after its last start, so that the
# members of a direction asking at once make one run, yet one that starts after they asked.
SOONEST_SECONDS = 0.5


class TopicSource(Protocol):
    """What a Flow learns its topics from: a controller, in its process or through Ray."""

    def current(self) -> Synced | None:
        """What the last topic sync found; None until one went through."""

    def refresh_soon(self) -> None:
        """A fetch met something the last sync did not know of: sync again now."""


@dataclass(frozen=True)
class Job:
    """A periodic job: `run()` every `interval` seconds; after a failure, again after `retry`
    seconds if that is sooner."""

    name: str
    interval: float
    run: Callable[[], object]
    retry: float | None = None


class Schedule:
    """Named jobs run one after another in one loop, each at its own interval, the first
    time at once. A job that fails is logged and runs again at its next turn; the others
    go on."""

    def __init__(self, label: str, jobs: list[Job], clock: Callable[[], float] = time.monotonic):
        self._label = label
        self._jobs = {job.name: job for job in jobs}
        self._clock = clock
        self._due = {job.name: 0.0 for job in jobs}
        self._started = {job.name: float("-inf") for job in jobs}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.runs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def soon(self, name: str) -> None:
        """Run the job early: now, or SOONEST_SECONDS after its last start. Safe from any thread."""
        self._due[name] = min(self._due[name], self._started[name] + SOONEST_SECONDS)
        self._wake.set()

    def run_due(self) -> float:
        """Run every job that is due; return the seconds until one is due again."""
        for name, job in self._jobs.items():
            now = self._clock()
            if now < self._due[name]:
                continue
            self._started[name] = now
            self._due[name] = now + job.interval  # before the run: an early ask during it stands
            try:
                job.run()
                self.runs[name] += 1
            except Exception as exc:  # a controller that stopped would stop its jobs without a word
                self.failures[name] += 1
                wait = job.interval if job.retry is None else min(job.interval, job.retry)
                self._due[name] = min(self._due[name], self._clock() + wait)
                expected = isinstance(exc, (KafkaError, ReplicatorError, OSError))
                log.warning("%s: %s failed (%s); trying again in %.0fs", self._label, name,
                            _described(exc), wait, exc_info=not expected)
        return max(0.0, min(self._due.values()) - self._clock())

    def run(self) -> None:
        """Until stop(): run the jobs when due, and at once when one is asked for early."""
        while not self._stopping.is_set():
            wait = self.run_due()
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()


class Controller:
    """One direction's periodic jobs: the topic sync every topicRefreshSeconds, the group
    offset sync every syncGroupOffsets.intervalSeconds and the ACL sync every
    syncAcls.intervalSeconds when they are enabled, and with `measure_backlog` the backlog
    every MEASURE_SECONDS."""

    def __init__(self, config: ReplicatorConfig, direction: str, measure_backlog: bool = True):
        self.config = config
        self.direction = direction
        settings = config.direction(direction)
        self._settings = settings
        self._topic_sync: TopicSync | None = None
        self._admins: list = []
        self._synced: Synced | None = None
        self._acl_sync: AclSync | None = None  # kept for the direction's life: it says a refusal once
        self._acl_admins: list = []
        self._backlog: Backlog | None = None
        self.backlog: BacklogFigures | None = None  # the last measure
        self.group_sync = GroupSync(config, direction) if settings.sync_group_offsets.enabled else None
        jobs = [Job(TOPICS, settings.topic_refresh_seconds, self._sync_topics, TOPIC_SYNC_RETRY_SECONDS)]
        if self.group_sync is not None:
            jobs.append(Job(GROUP_OFFSETS, settings.sync_group_offsets.interval_seconds,
                            self.group_sync.sync_once))
        if settings.sync_acls.enabled:
            jobs.append(Job(ACLS, settings.sync_acls.interval_seconds, self._sync_acls))
        if measure_backlog:
            jobs.append(Job(BACKLOG, MEASURE_SECONDS, self._measure_backlog))
        self.schedule = Schedule(f"{direction} controller", jobs)
        self._thread: threading.Thread | None = None

    def current(self) -> Synced | None:
        return self._synced

    def refresh_soon(self) -> None:
        self.schedule.soon(TOPICS)

    def run(self) -> None:
        """Run the jobs until close()."""
        try:
            self.schedule.run()
        finally:
            self._close_admins()
            self._close_acl_sync()
            self._close_backlog()

    def start(self) -> Controller:
        """Run in a thread of this process."""
        self._thread = threading.Thread(target=self.run, name=f"controller-{self.direction}", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the job running now."""
        self.schedule.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def _sync_topics(self) -> None:
        if self._topic_sync is None:
            self._topic_sync = self._new_topic_sync()
        try:
            self._synced = self._topic_sync.sync()
        except BaseException:
            self._close_admins()  # clients of a cluster that went away: new ones next time
            raise

    def _sync_acls(self) -> None:
        synced = self._synced
        if synced is None:
            return  # no topic sync went through yet: nothing is replicated
        if self._acl_sync is None:
            (source_side, source), (target_side, target) = self.config.clusters(self.direction)
            source_admin = link.admin_client(source_side, source)
            try:
                target_admin = link.admin_client(target_side, target)
            except BaseException:
                source_admin.close()
                raise
            self._acl_admins = [source_admin, target_admin]
            self._acl_sync = AclSync(source_admin, target_admin, self.config, self.direction)
        routes = {source: target for source, target in synced.routes.items() if source in synced.layouts}
        groups: list[str] = []
        if self.group_sync is not None:
            listed = self._acl_admins[0].list_groups()
            groups = self.group_sync.chosen(group["group_id"] for group in listed)
        self._acl_sync.sync(routes, groups)

    def _measure_backlog(self) -> None:
        if self._backlog is None:
            self._backlog = Backlog(self.config, self.direction)
        try:
            self.backlog = self._backlog.measure()
        except BaseException:
            self._close_backlog()  # clients of a cluster that went away: new ones next time
            raise

    def _close_acl_sync(self) -> None:
        if self._acl_sync is not None:
            self._acl_sync.close()
            self._acl_sync = None
        for admin in self._acl_admins:
            admin.close()
        self._acl_admins = []

    def _close_backlog(self) -> None:
        if self._backlog is not None:
            self._backlog.close()
            self._backlog = None

    def _new_topic_sync(self) -> TopicSync:
        (source_side, source), (target_side, target) = self.config.clusters(self.direction)
        source_admin = link.admin_client(source_side, source)
        self._admins.append(source_admin)
        target_admin = link.admin_client(target_side, target)
        self._admins.append(target_admin)
        settings = self._settings
        configs = (ConfigSync(source_admin, target_admin, settings.sync_topic_configs.exclude)
                   if settings.sync_topic_configs.enabled else None)
        return TopicSync(source_admin, target_admin, Selection.of(settings),
                         manage=settings.create_topics, configs=configs)

    def _close_admins(self) -> None:
        self._topic_sync = None
        for admin in self._admins:
            admin.close()
        self._admins = []


def _described(exc: Exception) -> str:
    """The error's type and message (kafka-python's messages start with the type already)."""
    text, kind = str(exc), type(exc).__name__
    return text if text.startswith(kind) else f"{kind}: {text}" if text else kind
