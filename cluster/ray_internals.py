"""Everything that uses Ray below its public API, in one place.

Ray is imported by each function, not by this module: `cluster.loopback` must be able
to set Ray's environment before Ray is first imported. Relied on (Ray 2.60, the pin of
the `ray` extra and of the chart):

- `ray._private.ray_constants.ENABLE_RAY_CLUSTER`: read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
  when Ray is imported; False makes Ray take 127.0.0.1 as this machine's node address, and
  makes `ray start` refuse worker nodes;
- `ray.scripts.scripts.ray_constants`: the module `ray start` reads that flag from, swapped
  for a copy so that the CLI allows worker nodes on loopback;
- `ray._private.services.find_bootstrap_address(temp_dir)`: the address of the cluster that
  the last `ray start` on this machine recorded;
- `ray._private.ray_logging.stdout_deduplicator` and `stderr_deduplicator`, and their
  `allow_re`: the lines the driver prints of its actors' output however alike they are.
"""

from __future__ import annotations

import re
import sys
import types


def multi_node_enabled() -> bool:
    """Ray's ENABLE_RAY_CLUSTER as this process sees it now."""
    import ray._private.ray_constants as ray_constants

    return ray_constants.ENABLE_RAY_CLUSTER


def enable_multi_node(enabled: bool) -> None:
    """Set ENABLE_RAY_CLUSTER for this process (Ray copied the variable when it was imported)."""
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = enabled


def ray_cli_with_worker_nodes(argv: list[str]) -> int:
    """Ray's own CLI (`ray start ...`), allowed to start worker nodes whatever ENABLE_RAY_CLUSTER says."""
    import ray._private.ray_constants as ray_constants
    import ray.scripts.scripts as scripts

    allowing = types.ModuleType("ray_constants")
    allowing.__dict__.update(vars(ray_constants))
    allowing.ENABLE_RAY_CLUSTER = True
    scripts.ray_constants = allowing
    sys.argv = ["ray", *argv]
    return scripts.main()


def recorded_address() -> str | None:
    """The cluster that the last `ray start` on this machine recorded, if any."""
    from ray._private import services

    return services.find_bootstrap_address(None)


def never_deduplicate(pattern: str) -> None:
    """Print every actor line matching `pattern` in this driver's output. Ray folds lines that
    differ only in words with digits ("sourceToTarget-1: rebalance ...") from several actors
    into one, or leaves them out, unless they match its allow pattern
    (RAY_DEDUP_LOGS_ALLOW_REGEX, read when Ray is imported): `pattern` is added to it."""
    from ray._private import ray_logging

    for deduplicator in (ray_logging.stdout_deduplicator, ray_logging.stderr_deduplicator):
        allowed = deduplicator.allow_re.pattern if deduplicator.allow_re else None
        deduplicator.allow_re = re.compile(f"(?:{allowed})|(?:{pattern})" if allowed else pattern)
