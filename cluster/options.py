"""The options of `kafka-replicator run` and of `python -m cluster.driver`, the same driver."""

from __future__ import annotations

import argparse
from pathlib import Path

from replicator.cli import CONFIG_HELP

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
