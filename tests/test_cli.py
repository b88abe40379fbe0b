"""The command line: help with examples, --version, --log-level anywhere, exit codes, and no
traceback for a wrong argument or a missing extra."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import cli
from replicator import logs

REPO = Path(__file__).resolve().parent.parent

COMMANDS = ("check", "replicate", "status", "offsets", "cutover", "verify", "sandbox", "run", "demo")


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse: --help, --version, usage errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_names_the_package_version(capsys):
    from importlib import metadata

    assert run(capsys, "--version")[:2] == (0, f"kafka-replicator {metadata.version('kafka-replicator')}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_an_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:\n  kafka-replicator " + command in out
    if "--config" in out:
        assert "configs/example.yaml" in out, "--config says what it takes"


def test_the_top_help_lists_the_exit_codes(capsys):
    out = run(capsys, "--help")[1]
    for code in ("0  done", "1  a check found a problem", "2  usage", "3  the config file is invalid",
                 "4  a cluster cannot be used"):
        assert code in out


def test_log_level_is_taken_before_or_after_the_command(capsys, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(cli.cli, "setup_logging", lambda level, log_format: seen.append(level))
    config = tmp_path / "missing.yaml"
    run(capsys, "--log-level", "debug", "check", "--config", str(config))
    run(capsys, "check", "--config", str(config), "--log-level", "warning")
    run(capsys, "check", "--config", str(config))
    assert seen == ["DEBUG", "WARNING", "INFO"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_log_format_json_before_or_after_it(capsys, monkeypatch, command):
    seen = []
    monkeypatch.setattr(cli.cli, "setup_logging", lambda level, log_format: seen.append(log_format))
    monkeypatch.setattr(cli, "_run", lambda args: 0)
    parser = cli.build_parser()
    rest = {"check": ["--config", "c.yaml"], "replicate": ["--config", "c.yaml", "--direction", "sourceToTarget"],
            "status": ["--config", "c.yaml"], "offsets": ["translate", "--config", "c.yaml", "--group", "g"],
            "cutover": ["--config", "c.yaml", "--direction", "sourceToTarget", "--groups", "g"],
            "verify": ["--config", "c.yaml"], "sandbox": ["status"], "run": ["--config", "c.yaml"], "demo": []}[command]
    assert parser.parse_args(["--log-format", "json", command, *rest]).log_format == "json"
    assert parser.parse_args([command, *rest, "--log-format", "json"]).log_format == "json"
    assert parser.parse_args([command, *rest]).log_format == "text"


def test_a_json_log_line_is_one_object_with_the_member_and_the_record_position():
    logs.set_member("sourceToTarget", "sourceToTarget-0")
    try:
        record = logging.LogRecord("replicator.flow", logging.ERROR, __file__, 1, "%s: rejected %s",
                                   ("sourceToTarget", "x"), None)
        record.__dict__.update(logs.at("orders", 2, 1200))
        line = logs.JsonFormatter().format(record)
    finally:
        logs.set_member(None, None)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed.pop("time").endswith("+00:00")
    assert parsed == {"level": "ERROR", "logger": "replicator.flow", "direction": "sourceToTarget",
                      "member": "sourceToTarget-0", "message": "sourceToTarget: rejected x",
                      "topic": "orders", "partition": 2, "offset": 1200}


def test_json_is_what_a_command_writes_on_stderr_with_log_format_json(tmp_path):
    """A real process: its lines parse as JSON, with its direction and member (here a config
    warning, logged before it connects; it is stopped there)."""
    config = tmp_path / "c.yaml"
    config.write_text("sourceKafka: {bootstrapServers: 'localhost:1'}\ntargetKafka: {bootstrapServers: 'localhost:2'}\n"
                      "producer: {lingerMs: 5}\nreplication: {sourceToTarget: {topics: [{sourceTopicName: a}]}}\n")
    process = subprocess.Popen([sys.executable, "-m", "cluster.cli", "--log-format", "json", "replicate", "--config",
                                str(config), "--direction", "sourceToTarget", "--member", "m-0"],
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = json.loads(process.stderr.readline())
    finally:
        process.kill()
        process.wait(timeout=30)
    assert (line["level"], line["direction"], line["member"]) == ("WARNING", "sourceToTarget", "m-0"), line
    assert "lingerMs" in line["message"]


def test_the_error_a_command_stops_on_is_a_json_line_too(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "check", "--config", str(tmp_path / "missing.yaml"),
                           "--log-format", "json"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 3
    line = json.loads(done.stderr)
    assert line["level"] == "ERROR" and line["message"].startswith("error: cannot read config file"), line


def test_a_bad_log_level_is_a_usage_error_without_a_traceback(capsys):
    code, _, err = run(capsys, "check", "--config", "x.yaml", "--log-level", "bogus")
    assert code == 2
    assert "'bogus' is not a log level; use one of DEBUG, INFO, WARNING, ERROR" in err
    assert "Traceback" not in err


def test_a_config_that_does_not_load_exits_3(capsys, tmp_path):
    code, _, err = run(capsys, "check", "--config", str(tmp_path / "missing.yaml"))
    assert (code, err.splitlines()[0][:40]) == (3, f"error: cannot read config file {tmp_path}"[:40])


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_without_ray_say_which_extra_to_install(capsys, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    argv = [command, "--config", str(tmp_path / "c.yaml")] if command == "run" else [command]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err == (f"error: `kafka-replicator {command}` runs on Ray, which is not installed here: "
                   "pip install 'kafka-replicator[ray]'\n")


@pytest.mark.parametrize("every", ["0", "-5", "soon"])
def test_verify_every_takes_a_positive_number_of_seconds(capsys, every):
    code, _, err = run(capsys, "verify", "--config", "c.yaml", "--every", every)
    assert code == 2
    assert f"{every!r} is not a positive number of seconds" in err


def test_verify_metrics_port_without_every_is_a_usage_error(capsys):
    code, _, err = run(capsys, "verify", "--config", "c.yaml", "--metrics-port", "0")
    assert code == 2
    assert err == "error: --metrics-port serves the mismatches of `verify --every`; add --every SECONDS\n"
