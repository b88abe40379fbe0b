"""The `kafka-replicator` command line: every subcommand, assembled here.

check, replicate, status, offsets and sandbox come from replicator.cli and need no Ray; run
and demo import Ray only when they run, so that the others stay quick.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from replicator import cli
from replicator.errors import ReplicatorError

from .options import add_run_arguments

EXIT_CODES = """\
exit codes:
  0  done, or stopped gracefully
  1  a check found a problem (a source topic missing, offsets that cannot be translated),
     replication stopped on an error, or the command cannot run here (Ray not installed)
  2  usage: the command line is wrong
  3  the config file is invalid
  4  a cluster cannot be used: unreachable, or it refused the credentials or an ACL"""


class RayMissing(ReplicatorError):
    def __init__(self, command: str):
        super().__init__(f"`kafka-replicator {command}` runs on Ray, which is not installed here: "
                         "pip install 'kafka-replicator[ray]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-replicator", description="Copy Kafka topics between two clusters, in both directions.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    cli.add_log_level(parser, default="INFO")
    common = argparse.ArgumentParser(add_help=False)
    cli.add_log_level(common, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_commands(commands, common)

    run = cli.command(commands, "run", common,
                      "run the replicator on Ray: one actor per group member, supervised", """\
  kafka-replicator run --config my.yaml                       # on a new local Ray cluster
  kafka-replicator run --config my.yaml --address HEAD:6379   # or ray://HEAD:10001, or $RAY_ADDRESS""",
                      _run)
    add_run_arguments(run)

    demo = cli.command(commands, "demo", common,
                       "sandbox clusters, sample traffic and the replicator on a local Ray, with a live "
                       "view and a final check that every record arrived", """\
  kafka-replicator demo --duration 60
  kafka-replicator demo --duration 300 --rate 1000 --state-dir /tmp/sandbox""", _demo)
    demo.add_argument("--duration", type=float, default=60.0,
                      help="seconds of sample traffic (default 60); Ctrl-C stops the demo at any time")
    demo.add_argument("--rate", type=float, default=250.0,
                      help="sample records per second, all topics together (default 250)")
    demo.add_argument("--state-dir", type=Path,
                      help="use (or start) the sandbox in this directory and keep it if it was "
                      "already running (default: a new sandbox in a temporary directory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.log_level)
    try:
        return args.handler(args) or 0
    except ReplicatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    try:
        return metadata.version("kafka-replicator")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "(not installed)"


def _ray(command: str) -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise RayMissing(command) from None


def _run(args) -> int:
    _ray("run")
    from .driver import run

    return run(args.config, args.address, args.namespace, args.progress_seconds, args.log_level)


def _demo(args) -> int:
    _ray("demo")
    from .demo import run

    return run(duration=args.duration, rate=args.rate, state_dir=args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
