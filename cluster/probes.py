"""The driver's /healthz and /readyz (`--health-port`), summing up its Ray members.

Live: the driver's loop goes round (it polls, restarts and stops the members). Ready: at its
last poll every planned member of every direction answered (its actor is ALIVE), had its
assignment and had committed within the bound (replicator.health). The loop writes what it
found; the probes' thread only reads it.
"""

from __future__ import annotations

import threading
import time

from replicator.endpoint import Endpoint

# How long the driver may take to join Ray and start its members before its loop first runs.
START_SECONDS = 300.0


class DriverProbes:
    def __init__(self, host: str, port: int, loop_bound: float):
        """`loop_bound`: seconds one round of the loop may take (a poll, or a scale-down stop)."""
        self._lock = threading.Lock()
        self._loop_bound = loop_bound
        self._started = time.monotonic()
        self._looped: float | None = None
        self._problems = ["the driver is starting its members"]
        self.endpoint = Endpoint(host, port, self._not_alive, self._not_ready)

    def looped(self, problems: list[str]) -> None:
        """One round of the loop is done; `problems`: why the members are not all ready."""
        with self._lock:
            self._looped = time.monotonic()
            self._problems = list(problems)

    def close(self) -> None:
        self.endpoint.close()

    def _not_alive(self) -> list[str]:
        with self._lock:
            looped = self._looped
        now = time.monotonic()
        if looped is None:
            waited = now - self._started
            return ([f"the driver has not started its loop in {waited:.0f}s"]
                    if waited > START_SECONDS else [])
        if now - looped > self._loop_bound:
            return [f"the driver's loop has not gone round for {now - looped:.0f}s "
                    f"(bound {self._loop_bound:.0f}s)"]
        return []

    def _not_ready(self) -> list[str]:
        with self._lock:
            looped, problems = self._looped, list(self._problems)
        if looped is not None and time.monotonic() - looped > self._loop_bound:
            return [f"the driver has not polled its members for {time.monotonic() - looped:.0f}s"]
        return problems
