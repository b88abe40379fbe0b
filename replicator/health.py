"""What a probe asks of a member: is its loop alive, and is it replicating (ready)?

Ready means the member has its partition assignment, its group is not rebalancing, and its
last commit went through within `commit_bound` (the same max(5 × autoCommitIntervalMs,
sessionTimeoutMs) after which an at-least-once member stops fetching). The rules are here,
apart from who serves them: `replicate --metrics-port` for its one member, the driver for
all of its Ray members.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .config import ReplicatorConfig


@dataclass
class Health:
    """What an operator (or a supervisor) probes."""

    direction: str
    member: str | None
    state: str = "starting"
    assigned: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)  # "topic[p]" or a refused "topic" → why
    in_flight: int = 0
    last_poll: float = 0.0  # wall-clock time of the loop's last group poll
    error: str | None = None
    generation: int = -1  # of the group at this member's last completed join; -1: none yet
    # From a join's start (or a lost coordinator) to the first commit after it.
    rebalancing: bool = False
    evicted: bool = False  # no heartbeat answered for a session
    since_commit: float = 0.0  # seconds since the last commit went through (or had nothing to do)
    commit_bound: float = 0.0  # seconds without a commit after which it is not ready
    poll_bound: float = 0.0  # seconds without a group poll after which its loop is not alive

    @property
    def name(self) -> str:
        return self.member or self.direction


def commit_bound(config: ReplicatorConfig, direction: str) -> float:
    group = config.group(direction)
    return max(5 * group.auto_commit_interval_ms, group.session_timeout_ms) / 1000.0


def poll_bound(config: ReplicatorConfig, direction: str) -> float:
    """A loop that has not polled its group for maxPollIntervalMs has left the group."""
    return config.group(direction).max_poll_interval_ms / 1000.0


def not_ready(health: Health) -> list[str]:
    """Why the member is not replicating; empty when it is ready."""
    name = health.name
    if health.state != "running":
        return [f"{name}: {health.state}" + (f" ({health.error})" if health.error else "")]
    problems = []
    if health.generation < 0:
        problems.append(f"{name}: no partition assignment yet")
    elif health.rebalancing:
        problems.append(f"{name}: its group is rebalancing (a join, or its coordinator being found)")
    if health.evicted:
        problems.append(f"{name}: no heartbeat answered for a session")
    if health.since_commit > health.commit_bound:
        problems.append(f"{name}: no commit went through for {health.since_commit:.0f}s "
                        f"(bound {health.commit_bound:.0f}s)")
    return problems


def not_alive(health: Health, now: float | None = None) -> list[str]:
    """Why the member's loop is stuck; empty while it runs (or starts, or stops)."""
    if health.state != "running" or not health.last_poll:
        return []
    idle = (time.time() if now is None else now) - health.last_poll
    if idle > health.poll_bound:
        return [f"{health.name}: its loop has not polled its group for {idle:.0f}s "
                f"(bound {health.poll_bound:.0f}s)"]
    return []
