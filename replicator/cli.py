"""The commands of `kafka-replicator` that need no Ray: check, replicate, status, offsets, cutover
and verify, each with its arguments, help and handler. cluster/cli.py assembles the command line
from them, its own `run`, and the development commands of a clone (`sandbox`, `demo`: dev/workbench).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from . import logs
from .config import DIRECTIONS, ReplicatorConfig, load_config
from .errors import ProblemFound, UsageError

log = logging.getLogger("replicator")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONFIG_HELP = "the replicator's YAML config (configs/example.yaml shows every key)"


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    logs.configure(level, log_format)


def report_error(exc: Exception, log_format: str) -> None:
    """The error a command stops on: `error: ...` on stderr, or a JSON line as its others."""
    if log_format == "json":
        log.error("error: %s", exc)
    else:
        print(f"error: {exc}", file=sys.stderr)


def log_level(text: str) -> str:
    """--log-level's type: a level name, in any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def add_log_level(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--log-level and --log-format; `default` None: taken after a command too, where the
    top parser's defaults stand unless given."""
    parser.add_argument("--log-level", type=log_level, default=default if default else argparse.SUPPRESS,
                        metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (default INFO)")
    parser.add_argument("--log-format", choices=logs.FORMATS,
                        default=logs.FORMATS[0] if default else argparse.SUPPRESS,
                        help="text (default) or json: one object per line with time, level, logger, "
                        "direction, member, message, and topic, partition and offset where there are some")


def command(commands, name: str, common: argparse.ArgumentParser, help: str, examples: str,
            handler) -> argparse.ArgumentParser:
    """A subcommand with its help, its examples and --log-level (accepted after it too)."""
    parser = commands.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".",
                                 epilog="examples:\n" + examples,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    check = command(commands, "check", common, "validate a config file, and with --connect reach its clusters", """\
  kafka-replicator check --config my.yaml
  kafka-replicator check --config my.yaml --connect   # both clusters answer, the source topics exist""",
                    _check)
    check.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    check.add_argument("--connect", action="store_true",
                       help="also check that both clusters answer and the source topics exist")

    replicate = command(commands, "replicate", common,
                        "run one member of one direction in this process (no Ray) until SIGTERM", """\
  kafka-replicator replicate --config my.yaml --direction sourceToTarget
  kafka-replicator replicate --config my.yaml --direction targetToSource --member targetToSource-1
  kafka-replicator replicate --config my.yaml --direction sourceToTarget --metrics-port 9400

The direction's controller runs in the same process, beside the member: it lists the source
topics, creates, grows and configures their targets, and syncs group offsets (syncGroupOffsets).
With several `replicate` processes for one direction each runs one; their jobs are idempotent
(a topic created twice is found created, an offset never moves backwards).""",
                        _replicate)
    replicate.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    replicate.add_argument("--direction", required=True, choices=DIRECTIONS)
    replicate.add_argument("--member", help="static group member id (group.instance.id)")
    replicate.add_argument("--metrics-port", type=port, metavar="PORT",
                           help="serve /metrics (kafka_replicator_*), /healthz and /readyz on this port")
    replicate.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                           help="address to serve them on (default 127.0.0.1; 0.0.0.0 in a container)")

    status = command(commands, "status", common,
                     "committed offset, log-end offset, lag and owner per partition of each direction", """\
  kafka-replicator status --config my.yaml
  kafka-replicator status --config my.yaml --json""", _status)
    status.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="one JSON object per partition and synced group")

    offsets = command(commands, "offsets", common,
                      "translate a consumer group's committed offsets to the other cluster", """\
  kafka-replicator offsets translate --config my.yaml --group dashboard
  kafka-replicator offsets translate --config my.yaml --group dashboard --direction targetToSource --json""",
                      _offsets)
    offsets.add_argument("action", choices=("translate",))
    offsets.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    offsets.add_argument("--group", required=True, help="the consumer group to translate")
    offsets.add_argument("--direction", choices=DIRECTIONS,
                         help="whose source the group reads (default: the first enabled direction)")
    offsets.add_argument("--json", action="store_true", help="one JSON object per partition")

    cutover = command(commands, "cutover", common,
                      "the planned switch to the target, once producers to the source stopped: wait until "
                      "every replicated partition is copied and committed, sync the named groups' offsets "
                      "a last time, and print per partition what the target holds and the RPO", """\
  kafka-replicator cutover --config my.yaml --direction sourceToTarget --groups billing dashboard
  kafka-replicator cutover --config my.yaml --direction sourceToTarget --timeout 60 --json
exit 0: the groups' consumers can move to the target now, with nothing lost and nothing read twice""",
                      _cutover)
    cutover.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    cutover.add_argument("--direction", required=True, choices=DIRECTIONS,
                         help="the direction whose target the consumers move to")
    cutover.add_argument("--groups", nargs="+", metavar="GROUP",
                         help="the consumer groups that move (default: those syncGroupOffsets.groups names, "
                         "when syncGroupOffsets is enabled)")
    cutover.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                         help="how long to wait for the replicator to copy and commit everything (default 300)")
    cutover.add_argument("--json", action="store_true",
                         help="one JSON object: the RPO, the partitions, the groups and the problems")

    verify = command(commands, "verify", common,
                     "compare each source partition with its copy, record by record, through the offset map",
                     """\
  kafka-replicator verify --config my.yaml                    # exit 0 only when the copy matches
  kafka-replicator verify --config my.yaml --direction sourceToTarget --topics orders payments --json
  kafka-replicator verify --config my.yaml --every 300 --metrics-port 9401   # until SIGTERM""",
                     _verify)
    verify.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    verify.add_argument("--direction", choices=DIRECTIONS, help="only this direction (default: every enabled one)")
    verify.add_argument("--topics", nargs="+", metavar="TOPIC", help="only these source topics")
    verify.add_argument("--json", action="store_true",
                        help="one JSON object: each partition's counts and discrepancies, and the totals")
    verify.add_argument("--every", type=seconds, metavar="SECONDS",
                        help="verify again every SECONDS until SIGTERM, exporting "
                        "kafka_replicator_verify_mismatches on --metrics-port")
    verify.add_argument("--metrics-port", type=port, metavar="PORT",
                        help="with --every: serve /metrics, /healthz and /readyz on this port")
    verify.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address to serve them on (default 127.0.0.1; 0.0.0.0 in a container)")



def _check(args) -> int:
    config = load_config(args.config)
    print(f"{args.config}: valid; directions: {', '.join(_summary(config))}")
    for warning in config.warnings():
        print(f"warning: {warning}")
    if args.connect:
        # Each failed connection attempt is logged by kafka-python; the outcome is ours to say.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        from .link import check_clusters

        for line in check_clusters(config):
            print(line)
    return 0


def _summary(config: ReplicatorConfig) -> list[str]:
    return [
        f"{name} ({len(config.direction(name).topics)} topics, {config.members(name)} members, "
        f"group {config.group(name).group_id})"
        for name in config.enabled_directions()
    ]


def _replicate(args) -> int:
    from .controller import Controller
    from .flow import Flow
    from .restarts import Restarts
    from .topics import Identities

    logs.set_member(args.direction, args.member)
    config = load_config(args.config)
    for warning in config.warnings():
        log.warning("%s", warning)
    identities = Identities()
    controller = Controller(config, args.direction, measure_backlog=args.metrics_port is not None).start()
    flows = Restarts(lambda: Flow(config, args.direction, args.member, identities=identities,
                                  topics=controller), restart_on_errors=False)
    probes = None
    if args.metrics_port is not None:
        from .probes import MemberProbes

        probes = MemberProbes(flows, controller, args.direction, args.member, args.metrics_host,
                              args.metrics_port)

    def stop(signum, _frame):
        log.info("%s received: stopping", signal.Signals(signum).name)
        flows.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        flows.run()
    finally:
        controller.close()
        if probes is not None:
            probes.close()
    return 0


def port(text: str) -> int:
    """--metrics-port's and --health-port's type: 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


def _status(args) -> int:
    from .offsets import describe_groups, format_synced, format_table, synced_groups

    config = load_config(args.config)
    rows = describe_groups(config)
    synced = synced_groups(config)
    if args.json:
        print(json.dumps([row.as_json() for row in rows] + [row.as_json() for row in synced], indent=2))
    else:
        print(format_table(rows))
        if synced:
            print()
            print(format_synced(synced))
    return 0


def _offsets(args) -> int:
    from .translation import Translator, format_table

    config = load_config(args.config)
    direction = args.direction or config.enabled_directions()[0]
    with Translator(config, direction) as translator:
        rows = translator.translate(args.group)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        print(format_table(rows))
    untranslated = sum(row.target_offset is None for row in rows)
    if untranslated:
        raise ProblemFound(f"{untranslated} of {len(rows)} partitions of group {args.group} have no "
                           "translated offset (see the table)")
    return 0


def _cutover(args) -> int:
    from .cutover import Cutover, format_report

    config = load_config(args.config)
    report = Cutover(config, args.direction, args.groups).run(args.timeout)
    print(json.dumps(report.as_json(), indent=2) if args.json else format_report(report))
    if report.problems:
        raise ProblemFound("consumers must not move to the target yet:\n  - " + "\n  - ".join(report.problems))
    return 0


def seconds(text: str) -> float:
    """--every's type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _verify(args) -> int:
    from . import verification, wire

    # Its IO thread receives large fetches, and warns of each that takes it over 100 ms.
    logging.getLogger(wire.SELECTOR_LOGGER).setLevel(max(logging.ERROR, logging.getLogger().level))
    if args.every is None and args.metrics_port is not None:
        raise UsageError("--metrics-port serves the mismatches of `verify --every`; add --every SECONDS")
    config = load_config(args.config)
    directions = [args.direction] if args.direction else config.enabled_directions()

    def show(verdicts, elapsed: float) -> None:
        if args.json:
            print(json.dumps({"partitions": [v.as_json() for v in verdicts],
                              "compared": sum(v.compared for v in verdicts),
                              "mismatches": sum(v.mismatches for v in verdicts),
                              "seconds": round(elapsed, 3)}, indent=2), flush=True)
            return
        print(verification.format_table(verdicts))
        lines = verification.format_discrepancies(verdicts)
        if lines:
            print()
            print("\n".join(lines))
        print(verification.summary(verdicts, elapsed), flush=True)

    if args.every is None:
        started = time.monotonic()
        verdicts = verification.verify(config, directions, args.topics)
        show(verdicts, time.monotonic() - started)
        problem = verification.verdict_problem(verdicts)
        if problem is not None:
            raise problem
        return 0

    from .verification_watch import Watch

    watch = Watch(config, directions, args.topics, args.every, show, args.metrics_host, args.metrics_port)

    def stop(signum, _frame):
        log.info("%s received: stopping", signal.Signals(signum).name)
        watch.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watch.run()
    return 0
