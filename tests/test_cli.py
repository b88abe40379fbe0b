"""The command line: help with examples, --version, --log-level anywhere, exit codes, and no
traceback for a wrong argument or a missing extra."""

import sys

import pytest

from cluster import cli

COMMANDS = ("check", "replicate", "status", "offsets", "sandbox", "run", "demo")


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
    monkeypatch.setattr(cli.cli, "setup_logging", seen.append)
    config = tmp_path / "missing.yaml"
    run(capsys, "--log-level", "debug", "check", "--config", str(config))
    run(capsys, "check", "--config", str(config), "--log-level", "warning")
    run(capsys, "check", "--config", str(config))
    assert seen == ["DEBUG", "WARNING", "INFO"]


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
