"""The `kafka-replicator` command: replicator.cli's commands plus `run` and `demo` on Ray.

Ray is imported only by the commands that use it, so `check` and `status` stay quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from replicator import cli

from .plan import NAMESPACE

PROGRESS_SECONDS = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    # replicator.cli keeps its subcommands in argparse's (private) sub-parsers action.
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))

    run = commands.add_parser(
        "run", help="run the replicator on Ray: one actor per group member, supervised")
    add_run_arguments(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo", help="sandbox clusters, sample traffic and the replicator on a local Ray, "
        "with a live view and a final check that every record arrived")
    demo.add_argument("--duration", type=float, default=60.0,
                      help="seconds of sample traffic (default 60); Ctrl-C stops the demo at any time")
    demo.add_argument("--rate", type=float, default=250.0,
                      help="sample records per second, all topics together (default 250)")
    demo.add_argument("--state-dir", type=Path,
                      help="use (or start) the sandbox in this directory and keep it if it was "
                      "already running (default: a new sandbox in a temporary directory)")
    demo.set_defaults(handler=_demo)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `kafka-replicator run` and `python -m cluster.driver`."""
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                        "cluster started with `ray start` on this machine, else a new local one)")
    parser.add_argument("--namespace", default=NAMESPACE,
                        help=f"Ray namespace of the actors (default {NAMESPACE})")
    parser.add_argument("--progress-seconds", type=float, default=PROGRESS_SECONDS,
                        help="log a progress line per direction this often "
                        f"(default {PROGRESS_SECONDS:.0f})")


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, parser=build_parser())


def _run(args) -> int:
    from .driver import run

    return run(args.config, args.address, args.namespace, args.progress_seconds, args.log_level)


def _demo(args) -> int:
    from .demo import run

    return run(duration=args.duration, rate=args.rate, state_dir=args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
