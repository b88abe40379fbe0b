"""The `kafka-replicator` command line: the commands that need no Ray."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from importlib import metadata
from pathlib import Path

from .config import DIRECTIONS, ReplicatorConfig, load_config
from .errors import ReplicatorError

log = logging.getLogger("replicator")

EXIT_ERROR = 2


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python's INFO lines repeat ours; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-replicator",
        description="Copy Kafka topics between two clusters, in both directions.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config file (and reach its clusters)")
    check.add_argument("--config", required=True, type=Path)
    check.add_argument("--connect", action="store_true",
                       help="also check that both clusters answer and the source topics exist")
    check.set_defaults(handler=_check)

    replicate = commands.add_parser(
        "replicate", help="run one member of one direction in this process (no Ray)")
    replicate.add_argument("--config", required=True, type=Path)
    replicate.add_argument("--direction", required=True, choices=DIRECTIONS)
    replicate.add_argument("--member", help="static group member id (group.instance.id)")
    replicate.set_defaults(handler=_replicate)

    status = commands.add_parser(
        "status", help="committed offset, log-end offset and lag per partition of each direction")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    offsets = commands.add_parser(
        "offsets", help="translate a consumer group's committed offsets to the other cluster")
    offsets.add_argument("action", choices=("translate",))
    offsets.add_argument("--config", required=True, type=Path)
    offsets.add_argument("--group", required=True, help="the consumer group to translate")
    offsets.add_argument("--direction", choices=DIRECTIONS,
                         help="whose source the group reads (default: the first enabled direction)")
    offsets.add_argument("--json", action="store_true")
    offsets.set_defaults(handler=_offsets)

    sandbox = commands.add_parser("sandbox", help="a local two-cluster Kafka for trying things out")
    sandbox.add_argument("action", choices=("up", "down", "status"))
    sandbox.add_argument("--state-dir", type=Path, help="where the brokers keep their data")
    sandbox.add_argument("--sasl", action="store_true",
                         help="also open a SASL_PLAINTEXT listener (SCRAM-SHA-256/512, PLAIN)")
    sandbox.add_argument("--tls", action="store_true",
                         help="also open SSL, SASL_SSL and MTLS (client certificate required) listeners, "
                         "with a throwaway CA and certificates in the state dir (implies --sasl)")
    sandbox.add_argument("--json", action="store_true")
    sandbox.set_defaults(handler=_sandbox)
    return parser


def _version() -> str:
    try:
        return metadata.version("kafka-replicator")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "(not installed)"


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.handler(args) or 0
    except ReplicatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _check(args) -> int:
    config = load_config(args.config)
    print(f"{args.config}: valid; directions: {', '.join(_summary(config))}")
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
    from .flow import Flow
    from .restarts import Restarts

    config = load_config(args.config)
    flows = Restarts(lambda: Flow(config, args.direction, args.member), restart_on_errors=False)

    def stop(signum, _frame):
        log.info("%s received: stopping", signal.Signals(signum).name)
        flows.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    flows.run()
    return 0


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
    return EXIT_ERROR if any(row.target_offset is None for row in rows) else 0


def _sandbox(args) -> int:
    from .sandbox import Sandbox

    sandbox = Sandbox(args.state_dir)
    if args.action == "up":
        info = sandbox.up(sasl=args.sasl, tls=args.tls)
        if args.json:
            print(json.dumps(info.as_json(), indent=2))
        else:
            print(f"source cluster: {info.source.bootstrap_servers}")
            print(f"target cluster: {info.target.bootstrap_servers}")
            for endpoint in (info.source, info.target):
                if endpoint.sasl:
                    print(f"{endpoint.name} SASL_PLAINTEXT: {endpoint.sasl.bootstrap_servers} "
                          f"user {endpoint.sasl.username}, password in {endpoint.sasl.password_file}")
                if endpoint.tls:
                    print(f"{endpoint.name} SSL: {endpoint.tls.ssl_bootstrap_servers}, "
                          f"SASL_SSL: {endpoint.tls.sasl_ssl_bootstrap_servers}, "
                          f"MTLS (client certificate required): {endpoint.tls.mtls_bootstrap_servers}")
            if info.source.tls:
                tls = info.source.tls
                print(f"CA certificate {tls.ca_file}, client certificate {tls.cert_file}, its key {tls.key_file}")
    elif args.action == "down":
        sandbox.down()
        print("sandbox stopped and its data removed")
    else:
        status = sandbox.status()
        if args.json:
            print(json.dumps(status, indent=2))
        for name, state in ({} if args.json else status).items():
            if state.get("bootstrapServers") is None:
                print(f"{name}: not started (run `kafka-replicator sandbox up`)")
            else:
                print(f"{name}: {'running' if state['running'] else 'stopped'}, "
                      f"{'answering' if state['answering'] else 'not answering'} "
                      f"on {state['bootstrapServers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
