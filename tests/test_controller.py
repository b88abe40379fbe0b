"""The controller's schedule: periodic jobs in one loop (no Kafka); and, against the real
sandbox brokers, a topic created after start reaching a member through its controller."""

from __future__ import annotations

import re
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

from kafka.structs import TopicPartition

from kafka_support import count, create_topic, produce, running, set_group_offsets, wait_until
from replicator.config import parse_config
from replicator.controller import SOONEST_SECONDS, Controller, Job, Schedule
from replicator.flow import Flow


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_job_runs_at_once_and_then_every_its_interval():
    clock, ran = Clock(), []
    schedule = Schedule("test", [Job("topics", 10, lambda: ran.append(("topics", clock.now))),
                                 Job("groups", 4, lambda: ran.append(("groups", clock.now)))], clock)

    for _ in range(21):
        schedule.run_due()
        clock.now += 1

    assert [at for job, at in ran if job == "topics"] == [100, 110, 120]
    assert [at for job, at in ran if job == "groups"] == [100, 104, 108, 112, 116, 120]


def test_the_schedule_says_how_long_until_the_next_job_is_due():
    clock = Clock()
    schedule = Schedule("test", [Job("topics", 10, lambda: None), Job("groups", 4, lambda: None)], clock)

    assert schedule.run_due() == 4
    clock.now += 3
    assert schedule.run_due() == 1


def test_a_failing_job_is_logged_and_tried_again_at_its_next_turn_while_the_others_go_on(caplog):
    clock, ran = Clock(), []

    def failing():
        raise KafkaTimeoutError("the source cluster did not answer")

    schedule = Schedule("sourceToTarget controller", [Job("topics", 5, failing),
                                                      Job("groups", 2, lambda: ran.append(clock.now))], clock)
    for _ in range(11):
        schedule.run_due()
        clock.now += 1

    assert ran == [100, 102, 104, 106, 108, 110]
    assert schedule.failures["topics"] == 3 and schedule.runs["groups"] == 6
    assert ("sourceToTarget controller: topics failed (KafkaTimeoutError: the source cluster did not "
            "answer); trying again in 5s") in caplog.text


def test_a_failing_job_with_a_retry_time_runs_again_that_soon():
    clock, ran = Clock(), []

    def failing():
        ran.append(clock.now)
        raise KafkaTimeoutError()

    schedule = Schedule("test", [Job("topics", 60, failing, retry=5)], clock)
    for _ in range(11):
        schedule.run_due()
        clock.now += 1

    assert ran == [100, 105, 110]


def test_an_unexpected_error_in_a_job_is_logged_with_its_traceback_and_the_loop_goes_on(caplog):
    clock = Clock()
    schedule = Schedule("test", [Job("topics", 1, lambda: {}["missing"])], clock)

    schedule.run_due()
    clock.now += 1
    schedule.run_due()

    assert schedule.failures["topics"] == 2
    assert caplog.records[0].exc_info is not None


def test_a_job_asked_for_early_runs_now_but_not_again_within_the_soonest_gap():
    clock, ran = Clock(), []
    schedule = Schedule("test", [Job("topics", 60, lambda: ran.append(clock.now))], clock)
    schedule.run_due()

    clock.now += SOONEST_SECONDS / 2
    schedule.soon("topics")
    schedule.run_due()
    clock.now += SOONEST_SECONDS / 2
    schedule.run_due()
    clock.now += 10
    schedule.soon("topics")
    schedule.run_due()

    assert ran == [100, 100 + SOONEST_SECONDS, 110 + SOONEST_SECONDS]


def test_a_running_schedule_wakes_for_a_job_asked_for_early_and_stops_when_told():
    ran = []
    schedule = Schedule("test", [Job("topics", 3600, lambda: ran.append(time.monotonic()))])
    thread = threading.Thread(target=schedule.run, daemon=True)
    thread.start()
    wait_until(lambda: len(ran) == 1, 5, interval=0.01, what="the first run")

    time.sleep(SOONEST_SECONDS)
    asked = time.monotonic()
    schedule.soon("topics")
    wait_until(lambda: len(ran) == 2, 5, interval=0.01, what="the early run")
    schedule.stop()
    thread.join(5)

    assert ran[1] - asked < 0.2
    assert not thread.is_alive()


@pytest.mark.kafka
def test_a_topic_created_after_start_is_created_on_the_target_by_the_controller_and_copied(sandbox, name):
    config = parse_config(sandbox.config(consumerGroup={"sourceToTarget": name}, replication={
        "sourceToTarget": {"include": [f"{re.escape(name)}-.*"], "topicRefreshSeconds": 1}}))
    create_topic(sandbox.source, f"{name}-a", partitions=1)
    controller = Controller(config, "sourceToTarget").start()
    try:
        with running(Flow(config, "sourceToTarget", topics=controller)):
            create_topic(sandbox.source, f"{name}-b", partitions=2)
            produce(sandbox.source, f"{name}-b", [(i % 2, None, f"v{i}".encode(), [], None) for i in range(10)])
            wait_until(lambda: count(sandbox.target, f"{name}-b") == 10, 30, what="the new topic's copy")
            published = controller.current()
    finally:
        controller.close()

    assert published.routes == {f"{name}-a": f"{name}-a", f"{name}-b": f"{name}-b"}
    assert published.layouts[f"{name}-b"].target_partitions == 2


@pytest.mark.kafka
def test_the_controller_keeps_the_targets_acls_in_step_with_the_sources_on_its_schedule(sandbox, name):
    from kafka import KafkaAdminClient

    from replicator.acls import Binding

    create_topic(sandbox.source, name, partitions=1)
    config = parse_config(sandbox.config(consumerGroup={"sourceToTarget": name}, replication={
        "sourceToTarget": {"topics": [{"sourceTopicName": name, "targetTopicName": f"{name}-copy"}],
                           "syncAcls": {"enabled": True, "intervalSeconds": 1}}}))
    reader = Binding("TOPIC", name, "LITERAL", f"User:{name}", "*", "READ", "ALLOW")
    copied = Binding("TOPIC", f"{name}-copy", "LITERAL", f"User:{name}", "*", "READ", "ALLOW")

    def acls(bootstrap: str) -> set:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            found, _ = admin.describe_acls(copied.exact_filter())
        finally:
            admin.close()
        return set(map(Binding.of, found))

    def change(bootstrap: str, add: bool) -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_acls([reader.acl()]) if add else admin.delete_acls([reader.exact_filter()])
        finally:
            admin.close()

    controller = Controller(config, "sourceToTarget", measure_backlog=False).start()
    try:
        change(sandbox.source, add=True)
        wait_until(lambda: acls(sandbox.target) == {copied}, 30, what="the ACL copied to the target")
        change(sandbox.source, add=False)
        wait_until(lambda: not acls(sandbox.target), 30, what="the ACL removed from the target")
    finally:
        controller.close()
        change(sandbox.source, add=False)


@pytest.mark.kafka
def test_the_controller_measures_its_directions_backlog(sandbox, name):
    create_topic(sandbox.source, name, partitions=1)
    produce(sandbox.source, name, [(0, None, b"v%d" % i, [], None) for i in range(4)])
    config = parse_config(sandbox.config(consumerGroup={"sourceToTarget": name},
                                         replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}}))
    set_group_offsets(sandbox.source, name, {TopicPartition(name, 0): 1})
    controller = Controller(config, "sourceToTarget").start()
    try:
        measured = wait_until(lambda: controller.backlog, 30, what="a backlog measure")
    finally:
        controller.close()

    [partition] = measured.partitions
    assert (partition.records, partition.owner, measured.ownerless) == (3, None, 1)
    assert 0 <= partition.seconds < 60
