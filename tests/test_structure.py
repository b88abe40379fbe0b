"""The shape of the code: no import cycles, and library internals behind one module each.

Read from the source with `ast`, imports inside functions included (a cycle closed by a
function-level import is still a cycle for the reader, and for the order of imports).
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("replicator", "cluster")

# kafka-python's public API, as its documentation presents it: the clients and names the
# top-level `kafka` package exports, and the modules of the values they take and raise.
# Everything else (kafka.coordinator, kafka.protocol, kafka.net, kafka.record, kafka.codec,
# kafka.partitioner, kafka.producer.*, kafka.consumer.*, ...) is below it, and so are the
# clients' private attributes that we reach.
KAFKA_PUBLIC = {"kafka", "kafka.errors", "kafka.structs", "kafka.admin"}
KAFKA_PRIVATE_ATTRIBUTES = {"_coordinator", "_subscription", "_accumulator", "_sender"}
KAFKA_INTERNALS_ALLOWED = {"replicator/wire.py", "replicator/group_member.py"}

# Ray below its public API: `ray._private` (and any other `ray._*`), and `ray.scripts`,
# the module of Ray's CLI whose globals cluster/ray_internals.py swaps.
RAY_INTERNALS_MODULE = "cluster/ray_internals.py"


def _sources() -> dict[str, Path]:
    """Dotted module name → file, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path) -> list[tuple[str, ast.AST]]:
    """Every module name an import in the file names (absolute), with its node."""
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            names.append((stem, node))
            names += [(f"{stem}.{alias.name}", node) for alias in node.names]
    return names


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    return {module: {name for name, _ in _imported(module, path) if name in modules and name != module}
            for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _uses(predicate_import, predicate_attribute) -> dict[str, list[str]]:
    """File → what it uses that the predicates pick: imported names and attribute chains."""
    uses: dict[str, list[str]] = {}
    for module, path in _sources().items():
        found = [name for name, _ in _imported(module, path) if predicate_import(name)]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and predicate_attribute(node):
                found.append(f"line {node.lineno}: .{node.attr}")
        if found:
            uses[_relative(path)] = found
    return uses


def _kafka_internal(name: str) -> bool:
    """Whether an imported name is kafka-python below its public API."""
    import kafka

    parts = name.split(".")
    if parts[0] != "kafka" or len(parts) == 1 or ".".join(parts[:2]) in KAFKA_PUBLIC:
        return False
    exported = getattr(kafka, parts[1], None)  # KafkaConsumer, TopicPartition, ...
    return exported is None or isinstance(exported, types.ModuleType)


def _ray_internal(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "ray" and len(parts) > 1 and (parts[1].startswith("_") or parts[1] == "scripts")


def test_the_modules_of_replicator_and_cluster_import_one_another_without_a_cycle():
    assert _cycles(_graph()) == []


def test_only_wire_and_the_group_member_reach_kafka_python_below_its_public_api():
    uses = _uses(_kafka_internal, lambda node: node.attr in KAFKA_PRIVATE_ATTRIBUTES)
    assert set(uses) == KAFKA_INTERNALS_ALLOWED, uses


def test_only_one_module_reaches_ray_below_its_public_api():
    uses = _uses(_ray_internal, lambda node: (isinstance(node.value, ast.Name) and node.value.id == "ray"
                                              and node.attr.startswith("_")))
    assert list(uses) == [RAY_INTERNALS_MODULE], uses


def test_the_structure_checks_see_what_they_look_for():
    """The checks are not vacuous: the known uses are found, a cycle would be."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "replicator.tables" in _graph()["replicator.offsets"]
    assert _kafka_internal("kafka.coordinator.assignors.range")
    assert _kafka_internal("kafka.net")
    assert _kafka_internal("kafka.protocol.consumer.FetchRequest")
    assert not _kafka_internal("kafka.KafkaConsumer")
    assert not _kafka_internal("kafka.errors.KafkaError")
    assert not _kafka_internal("kafka.admin.NewTopic")
    assert _ray_internal("ray._private.services") and not _ray_internal("ray.util")



# The admin requests that create, grow or configure topics, or move a group's offsets.
TOPIC_AND_GROUP_CHANGES = {"create_topics", "create_partitions", "alter_configs",
                           "incremental_alter_configs", "alter_group_offsets"}


def _calls(path: Path) -> list[str]:
    """The names of the functions and methods a file calls."""
    called = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return called


def _callers(*names: str) -> set[str]:
    return {module for module, path in _sources().items() if set(_calls(path)) & set(names)}


def test_the_data_loop_only_copies_the_syncs_run_in_the_controller():
    """The member's loop and what assembles it create, grow and configure no topic and sync
    no group; the direction's controller builds the syncs that do. (`status` builds a group
    sync too, to show what it would write, and writes nothing; `cutover` syncs the groups
    that move a last time, once, when the operator runs it.)"""
    assert _callers("TopicSync", "ConfigSync") == {"replicator.controller"}
    assert _callers("GroupSync") == {"replicator.controller", "replicator.offsets", "replicator.cutover"}
    data_loop = {"replicator.flow", "replicator.assembly", "cluster.member"}
    assert not data_loop & _callers(*TOPIC_AND_GROUP_CHANGES)
    assert {"replicator.topics", "replicator.config_sync"} <= _callers(*TOPIC_AND_GROUP_CHANGES)
