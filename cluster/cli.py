"""The `kafka-replicator` command line: every subcommand, assembled here.

check, replicate, status and offsets come from replicator.cli and need no Ray; run imports Ray
only when it runs, so that the others stay quick. A clone's development package adds `sandbox`
and `demo` (dev/workbench, entry points in the group kafka_replicator.commands); the runtime
wheel and the image have neither.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from replicator import cli
from replicator.errors import ReplicatorError

from .options import add_run_arguments, health_address

COMMANDS_GROUP = "kafka_replicator.commands"  # entry points: callables(commands, common) adding one

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
    for entry in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name):
        entry.load()(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.log_level, args.log_format)
    try:
        return args.handler(args) or 0
    except ReplicatorError as exc:
        cli.report_error(exc, args.log_format)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    try:
        return metadata.version("kafka-replicator")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "(not installed)"


def require_ray(command: str) -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise RayMissing(command) from None


def _run(args) -> int:
    require_ray("run")
    from .driver import run

    return run(args.config, args.address, args.namespace, args.progress_seconds, args.log_level,
               health_address(args), args.log_format)


if __name__ == "__main__":
    sys.exit(main())
