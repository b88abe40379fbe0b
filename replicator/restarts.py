"""When a Flow that ended starts again: one policy, for `kafka-replicator replicate` and the
Ray member alike.

- The flow returned (it was stopped): done.
- ConfigError: never again, only an operator can fix the config; it is raised.
- Fenced (exactly once: another member took over one of its partitions): a new Flow, which
  joins the group again and resumes from the positions the target committed.
- Any other error: raised if `restart_on_errors` is off (a process, which its supervisor
  restarts and whose exit code says why), else a new Flow (the Ray member, which Ray
  restarts only when its process dies).

Every restart waits first: 1 s, doubled each time up to 30 s, and 1 s again once a flow
had run for a minute, so that a flow failing at once does not spin.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .errors import ConfigError, Fenced
from .flow import Flow

log = logging.getLogger(__name__)

PAUSE_SECONDS = (1.0, 30.0)  # first and longest pause before a flow starts again


class Restarts:
    """Runs a direction's member as a Flow, and a new Flow after each one that failed."""

    def __init__(self, new_flow: Callable[[], Flow], restart_on_errors: bool):
        self._new_flow = new_flow
        self._restart_on_errors = restart_on_errors
        # Reentrant: stop() may run in a signal handler that interrupted this thread holding it.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self.flow = new_flow()

    def run(self) -> None:
        """Until a flow returns or stop() is called; raises ConfigError (and, unless
        `restart_on_errors`, any error but Fenced)."""
        pause = PAUSE_SECONDS[0]
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                flow = self.flow
            name = flow.member or flow.direction
            started = time.monotonic()
            try:
                flow.run()
                return
            except ConfigError:
                raise
            except Exception as exc:
                if not (self._restart_on_errors or isinstance(exc, Fenced)):
                    raise
                if time.monotonic() - started > 2 * PAUSE_SECONDS[1]:
                    pause = PAUSE_SECONDS[0]  # it had been working: a new incident
                if isinstance(exc, Fenced):  # expected when partitions move: not an error
                    log.warning("%s: %s; starting again in %.0fs", name, exc, pause)
                else:
                    log.error("%s: %s: %s; starting again in %.0fs", name, type(exc).__name__, exc, pause)
            if self._stopping.wait(pause):
                return
            pause = min(2 * pause, PAUSE_SECONDS[1])
            with self._lock:
                if not self._stopping.is_set():
                    self.flow = self._new_flow()

    def stop(self, leave_group: bool = False) -> None:
        """Stop the flow running now, and start no other; safe from any thread."""
        with self._lock:
            self._stopping.set()
            flow = self.flow
        flow.stop(leave_group)
