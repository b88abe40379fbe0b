"""The plan: members per direction, their names and what they reserve in Ray. No Ray needed."""

import pytest

from cluster.plan import DEFAULT_CPUS, MemberPlan, controllers, plan
from replicator.config import parse_config
from replicator.errors import ConfigError
from replicator.quantity import cpus, memory_bytes

BOTH = {
    "sourceKafka": {"bootstrapServers": "kafka:9092"},
    "targetKafka": {"bootstrapServers": "kafka-warehouse:9092"},
    "replication": {
        "sourceToTarget": {"topics": [{"sourceTopicName": "damage"}]},
        "targetToSource": {"topics": [{"sourceTopicName": "warehouse-events"}]},
    },
}


def test_each_enabled_direction_gets_replica_count_members_named_direction_index():
    members = plan(parse_config({**BOTH, "replicaCount": 2}))
    assert [m.name for m in members] == [
        "sourceToTarget-0", "sourceToTarget-1", "targetToSource-0", "targetToSource-1"]


def test_a_directions_own_replica_count_overrides_the_shared_one():
    replication = {
        "sourceToTarget": {"topics": [{"sourceTopicName": "damage"}], "replicaCount": 3},
        "targetToSource": {"topics": [{"sourceTopicName": "w"}], "replicaCount": 0},
    }
    members = plan(parse_config({**BOTH, "replicaCount": 1, "replication": replication}))
    assert [m.name for m in members] == ["sourceToTarget-0", "sourceToTarget-1", "sourceToTarget-2"]


def test_a_disabled_direction_has_no_members():
    replication = {**BOTH["replication"], "targetToSource": {"enabled": False}}
    members = plan(parse_config({**BOTH, "replication": replication}))
    assert {m.direction for m in members} == {"sourceToTarget"}


def test_members_reserve_the_requested_cpu_and_memory():
    config = parse_config({**BOTH, "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                                 "limits": {"cpu": "1", "memory": "1Gi"}}})
    assert set(plan(config)) == {
        MemberPlan("sourceToTarget", 0, 0.25, 512 * 2**20),
        MemberPlan("targetToSource", 0, 0.25, 512 * 2**20),
    }


def test_without_requests_a_member_reserves_half_a_cpu_and_no_memory():
    member = plan(parse_config(BOTH))[0]
    assert (member.num_cpus, member.memory) == (DEFAULT_CPUS, None) == (0.5, None)


@pytest.mark.parametrize("quantity, expected", [
    ("500m", 0.5), ("2", 2.0), (1.5, 1.5), ("0.1", 0.1), (" 750m ", 0.75),
])
def test_cpu_quantities_read_like_kubernetes(quantity, expected):
    assert cpus(quantity) == pytest.approx(expected)


@pytest.mark.parametrize("quantity, expected", [
    ("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("500M", 5 * 10**8),
    ("128974848", 128974848), ("129e6", 129 * 10**6), ("64Ki", 65536), ("1.5Gi", 3 * 2**29),
])
def test_memory_quantities_read_like_kubernetes(quantity, expected):
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize("quantity", ["lots", "12Qi", "-1Gi", "0", "Mi"])
def test_a_bad_memory_quantity_names_an_example(quantity):
    with pytest.raises(ValueError, match=r"512Mi|more than 0"):
        memory_bytes(quantity)


@pytest.mark.parametrize("quantity", ["half", "0", "-500m", "1 core"])
def test_a_bad_cpu_quantity_names_an_example(quantity):
    with pytest.raises(ValueError, match=r"500m|more than 0"):
        cpus(quantity)


@pytest.mark.parametrize("key, value", [("requests", {"memory": "a lot"}), ("requests", {"cpu": "lots"}),
                                        ("limits", {"memory": "12Qi"})])
def test_a_bad_quantity_is_refused_with_the_config_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"resources\.{key}\.{next(iter(value))}: .* quantity"):
        parse_config({**BOTH, "resources": {key: value}})


def test_each_enabled_direction_gets_one_controller_that_reserves_no_cpu():
    replication = {**BOTH["replication"], "targetToSource": {"enabled": False}}
    planned = controllers(parse_config({**BOTH, "replicaCount": 3, "replication": replication}))
    assert [(c.name, c.num_cpus, c.pin) for c in planned] == [
        ("controller-sourceToTarget", 0.0, "kafka-replicator-sourceToTarget")]
