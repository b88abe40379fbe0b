"""How fast `verify` compares a copy: records of the bench's data set pre-loaded into a sandbox,
copied by one member in this process, then verified, timed, and printed as records/s.

    python -m workbench.bench.verify_speed [--records 1000000] [--size 100] [--mode batch]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from replicator.config import parse_config
from replicator.flow import Flow
from replicator.verification import verify
from workbench.sandbox import Sandbox

from . import data


def copied(bootstrap_servers: dict, dataset: data.DataSet, mode: str, timeout: float) -> tuple[dict, float]:
    """The config of a direction that copied the data set, and how long it took."""
    group = f"{dataset.topic}-copy"
    config = parse_config({
        "sourceKafka": {"bootstrapServers": bootstrap_servers["source"]},
        "targetKafka": {"bootstrapServers": bootstrap_servers["target"]},
        "consumerGroup": {"sourceToTarget": {"groupId": group, "autoCommitIntervalMs": 500}},
        "replication": {"sourceToTarget": {"mode": mode, "topics": [{"sourceTopicName": dataset.topic}]}},
    })
    flow = Flow(config, "sourceToTarget", None)
    thread = threading.Thread(target=flow.run, name="copy", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while not data.group_at(bootstrap_servers["source"], group, dataset.topic, dataset.counts):
            if time.monotonic() - started > timeout or not thread.is_alive():
                raise RuntimeError(f"the copy of {dataset.topic} did not finish within {timeout:.0f}s")
            time.sleep(1.0)
        return config, time.monotonic() - started
    finally:
        flow.stop()
        thread.join(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench.verify_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--mode", choices=("batch", "record"), default="batch")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for the pre-load and the copy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verify-speed-") as directory:
        sandbox = Sandbox(Path(directory))
        try:
            info = sandbox.up()
            servers = {"source": info.source.bootstrap_servers, "target": info.target.bootstrap_servers}
            dataset = data.preload(servers["source"], data.DataSet(f"verify-speed-{args.size}B", args.records,
                                                                   args.size), timeout=args.timeout)
            print(f"pre-loaded {dataset.records:,} records of {args.size} B in {dataset.preload_seconds:.1f} s")
            config, seconds = copied(servers, dataset, args.mode, args.timeout)
            print(f"copied them ({args.mode} mode) in {seconds:.1f} s")
            started = time.monotonic()
            verdicts = verify(config, ["sourceToTarget"])
            seconds = time.monotonic() - started
            compared = sum(v.compared for v in verdicts)
            mismatches = sum(v.mismatches for v in verdicts)
            print(f"verify: {compared:,} records compared in {seconds:.1f} s: {compared / seconds:,.0f} records/s "
                  f"({len(verdicts)} partitions, {mismatches} mismatches)")
            return 0 if mismatches == 0 and compared == dataset.records else 1
        finally:
            sandbox.down()


if __name__ == "__main__":
    raise SystemExit(main())
