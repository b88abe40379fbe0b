"""The options of `kafka-replicator run` and of `python -m cluster.driver`, the same driver."""

from __future__ import annotations

import argparse
from pathlib import Path

from replicator.cli import CONFIG_HELP, port

from .plan import NAMESPACE

PROGRESS_SECONDS = 30.0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                        "cluster started with `ray start` on this machine, else a new local one)")
    parser.add_argument("--namespace", default=NAMESPACE,
                        help=f"Ray namespace of the actors (default {NAMESPACE})")
    parser.add_argument("--progress-seconds", type=float, default=PROGRESS_SECONDS,
                        help="log a progress line per direction this often "
                        f"(default {PROGRESS_SECONDS:.0f})")
    parser.add_argument("--health-port", type=port, metavar="PORT",
                        help="serve /healthz (the driver runs) and /readyz (every member replicates) "
                        "on this port")
    parser.add_argument("--health-host", default="127.0.0.1", metavar="HOST",
                        help="address to serve them on (default 127.0.0.1; 0.0.0.0 in a pod)")


def health_address(args: argparse.Namespace) -> tuple[str, int] | None:
    """(host, port) of the driver's probes, if --health-port asks for them."""
    return None if args.health_port is None else (args.health_host, args.health_port)
