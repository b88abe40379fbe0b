"""How fast `verify` compares a copy: records of the bench's data set pre-loaded into a sandbox,
copied by one member in this process, then verified by `kafka-replicator verify` in a process
of its own, whose records/s and peak memory are printed.

    python -m workbench.bench.verify_speed [--records 1000000] [--size 100] [--mode batch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from replicator.config import parse_config
from replicator.flow import Flow
from workbench.sandbox import Sandbox

from . import data


def settings(servers: dict, dataset: data.DataSet, mode: str) -> dict:
    return {
        "sourceKafka": {"bootstrapServers": servers["source"]},
        "targetKafka": {"bootstrapServers": servers["target"]},
        "consumerGroup": {"sourceToTarget": {"groupId": f"{dataset.topic}-copy", "autoCommitIntervalMs": 500}},
        "replication": {"sourceToTarget": {"mode": mode, "topics": [{"sourceTopicName": dataset.topic}]}},
    }


def copy(servers: dict, dataset: data.DataSet, config: dict, timeout: float) -> float:
    """Copy the data set with one member in this process; the seconds it took."""
    flow = Flow(parse_config(config), "sourceToTarget", None)
    thread = threading.Thread(target=flow.run, name="copy", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while not data.group_at(servers["source"], f"{dataset.topic}-copy", dataset.topic, dataset.counts):
            if time.monotonic() - started > timeout or not thread.is_alive():
                raise RuntimeError(f"the copy of {dataset.topic} did not finish within {timeout:.0f}s")
            time.sleep(1.0)
        return time.monotonic() - started
    finally:
        flow.stop()
        thread.join(timeout=60)


# `kafka-replicator verify`, then its own peak resident memory (KiB) as stderr's last line: VmHWM,
# which starts again at exec, unlike ru_maxrss, which keeps the forking parent's.
VERIFY = """import re, sys
from pathlib import Path
from cluster.cli import main
code = main(["verify", "--config", sys.argv[1], "--json"])
print(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1), file=sys.stderr)
sys.exit(code)"""


def verified(config_file: Path) -> dict:
    """`verify --json`'s answer, with the process's peak resident memory in MiB."""
    done = subprocess.run([sys.executable, "-c", VERIFY, str(config_file)], capture_output=True, text=True,
                          timeout=3600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"verify failed: {done.stderr}")
    answer = json.loads(done.stdout)
    answer["peak_mib"] = int(done.stderr.split()[-1]) / 1024
    return answer


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
            config = settings(servers, dataset, args.mode)
            print(f"copied them ({args.mode} mode) in {copy(servers, dataset, config, args.timeout):.1f} s")
            config_file = Path(directory) / "config.yaml"
            config_file.write_text(yaml.safe_dump(config))
            answer = verified(config_file)
            compared, seconds = answer["compared"], answer["seconds"]
            print(f"verify: {compared:,} records compared in {seconds:.1f} s: {compared / seconds:,.0f} records/s, "
                  f"{answer['mismatches']} mismatches, peak memory {answer['peak_mib']:.0f} MiB "
                  f"({len(answer['partitions'])} partitions)")
            return 0 if answer["mismatches"] == 0 and compared == dataset.records else 1
        finally:
            sandbox.down()


if __name__ == "__main__":
    raise SystemExit(main())
