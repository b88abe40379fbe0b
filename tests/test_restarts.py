"""The one restart policy of a Flow (replicator.restarts), on flows that fail as told."""

from __future__ import annotations

import threading

import pytest

from replicator import restarts
from replicator.errors import ClusterError, ConfigError, Fenced
from replicator.restarts import Restarts


class ScriptedFlow:
    """Raises the next error of the script when run, or returns once stopped."""

    direction, member = "sourceToTarget", "sourceToTarget-0"

    def __init__(self, error: BaseException | None):
        self.error = error
        self.stopped = threading.Event()

    def run(self):
        if self.error is not None:
            raise self.error
        self.stopped.wait(10)

    def stop(self, leave_group=False):
        self.stopped.set()


def flows(*errors):
    """A new_flow() that hands out flows failing with `errors` in turn, then one that runs."""
    made: list[ScriptedFlow] = []
    script = list(errors)

    def new_flow():
        made.append(ScriptedFlow(script.pop(0) if script else None))
        return made[-1]
    return new_flow, made


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    monkeypatch.setattr(restarts, "PAUSE_SECONDS", (0.01, 0.05))


def run_until_running(policy: Restarts, made: list) -> None:
    thread = threading.Thread(target=policy.run, daemon=True)
    thread.start()
    for _ in range(500):
        if made[-1].error is None:
            break
        thread.join(0.01)
    policy.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_fenced_flow_is_replaced_by_a_new_one_in_a_process_and_in_a_ray_member():
    for restart_on_errors in (False, True):
        new_flow, made = flows(Fenced("kafka-replicator.g.orders.0", "ProducerFencedError"))
        run_until_running(Restarts(new_flow, restart_on_errors), made)
        assert len(made) == 2


def test_any_other_error_ends_a_process_with_that_error():
    new_flow, made = flows(ClusterError("target", "127.0.0.1:2", "unreachable"))
    with pytest.raises(ClusterError):
        Restarts(new_flow, restart_on_errors=False).run()
    assert len(made) == 1


def test_a_ray_member_replaces_a_flow_after_any_error():
    new_flow, made = flows(ClusterError("target", "127.0.0.1:2", "unreachable"), RuntimeError("boom"))
    run_until_running(Restarts(new_flow, restart_on_errors=True), made)
    assert len(made) == 3


def test_a_config_error_is_never_restarted():
    for restart_on_errors in (False, True):
        new_flow, made = flows(ConfigError("replication.sourceToTarget.topics: required"))
        with pytest.raises(ConfigError):
            Restarts(new_flow, restart_on_errors).run()
        assert len(made) == 1


def test_a_stop_during_the_pause_starts_no_new_flow(monkeypatch):
    monkeypatch.setattr(restarts, "PAUSE_SECONDS", (5.0, 5.0))
    new_flow, made = flows(RuntimeError("boom"))
    policy = Restarts(new_flow, restart_on_errors=True)
    thread = threading.Thread(target=policy.run, daemon=True)
    thread.start()
    thread.join(0.3)  # the flow failed and the policy waits
    policy.stop()
    thread.join(2)
    assert not thread.is_alive() and len(made) == 1
