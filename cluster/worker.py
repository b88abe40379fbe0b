"""What the process of every replicator actor (member or controller) sets up and asks Ray."""

from __future__ import annotations

import logging
import warnings

from replicator import logs, wire

EXPORT_SECONDS = 5.0  # how often an actor exports its metrics


def reconstructed(context) -> bool:
    """Whether Ray restarted this actor (its own property trips a deprecation warning in 2.60)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(context.was_current_actor_reconstructed)


def log_to_stderr(level: str, log_format: str) -> None:
    """The replicator's lines on the worker's stderr, which Ray forwards to the driver."""
    logs.configure(level, log_format, replace=True)
    # Its event loop's "task ran for over 100 ms": a busy small node logs it all the time.
    logging.getLogger(wire.SELECTOR_LOGGER).setLevel(max(logging.ERROR, logging.getLogger().level))
