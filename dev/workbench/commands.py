"""`kafka-replicator sandbox` and `kafka-replicator demo`, added to the command line through the
entry points in dev/pyproject.toml."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.cli import require_ray
from replicator.cli import command


def add_sandbox(commands, common) -> None:
    sandbox = command(commands, "sandbox", common, "a local two-cluster Kafka for trying things out", """\
  kafka-replicator sandbox up --state-dir /tmp/sandbox --json
  kafka-replicator sandbox status --state-dir /tmp/sandbox
  kafka-replicator sandbox down --state-dir /tmp/sandbox""", _sandbox)
    sandbox.add_argument("action", choices=("up", "down", "status"))
    sandbox.add_argument("--state-dir", type=Path, help="where the brokers keep their data")
    sandbox.add_argument("--sasl", action="store_true",
                         help="also open a SASL_PLAINTEXT listener (SCRAM-SHA-256/512, PLAIN)")
    sandbox.add_argument("--tls", action="store_true",
                         help="also open SSL, SASL_SSL and MTLS (client certificate required) listeners, "
                         "with a throwaway CA and certificates in the state dir (implies --sasl)")
    sandbox.add_argument("--json", action="store_true")


def add_demo(commands, common) -> None:
    demo = command(commands, "demo", common,
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


def _demo(args) -> int:
    require_ray("demo")
    from .demo import run

    return run(duration=args.duration, rate=args.rate, state_dir=args.state_dir)


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
