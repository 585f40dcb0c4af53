"""The house rules of docs/architecture.md, read from the source: which folder may import which,
and no import cycle between modules. Every import counts, also one inside a function (a cycle
hidden in a function is still one a reader has to untangle), except those under
``TYPE_CHECKING``: an annotation may name a type from anywhere."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("model", "planning", "policies", "drivers", "simulators", "daemon")
# What each folder may import of wattshift, besides itself.
MAY_IMPORT = {
    "model": set(),
    "planning": {"model"},
    "policies": {"model", "planning"},
    "drivers": {"model"},
    "simulators": {"model", "drivers"},
    "daemon": {"model", "planning", "policies", "drivers", "simulators"},
}
# Inside the daemon: the entry points, which nothing else imports and which alone may import the
# simulators (the demo runs a simulated site).
ENTRY_ROOMS = {"cli", "demo"}
SIMULATORS_ONLY_FOR = ENTRY_ROOMS
# The GPU host's agent is a process of its own: only the entry points start it, and it imports
# no room of the controller but the config and the MQTT client.
AGENT_MAY_IMPORT = {"config", "mqtt"}


def module_name(path: Path) -> str:
    parts = ["wattshift", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}


def imports(path: Path, name: str) -> Iterator[str]:
    """Every wattshift module ``path`` imports (``from pkg import mod`` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # the walk below does not see them
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("wattshift."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            if not base.startswith("wattshift."):
                continue
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path, name) if m in known and m != name} for name, path in known.items()}


def folder(module: str) -> str:
    return module.split(".")[1]


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[1] == "daemon" and len(parts) > 3 else None


@pytest.mark.parametrize("top", FOLDERS)
def test_each_folder_imports_only_the_layers_below_it(top):
    wrong = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if folder(name) == top
        for target in targets
        if folder(target) != top and folder(target) not in MAY_IMPORT[top]
    ]
    assert wrong == []


def test_only_the_demo_imports_the_simulators_and_nothing_imports_the_entry_points():
    wrong = []
    for name, targets in graph().items():
        for target in targets:
            if folder(name) == "daemon" and folder(target) == "simulators" and room(name) not in SIMULATORS_ONLY_FOR:
                wrong.append(f"{name} imports {target}")
            if room(target) in ENTRY_ROOMS and room(name) not in ENTRY_ROOMS:
                wrong.append(f"{name} imports {target}")
            if room(target) == "agent" and room(name) not in ENTRY_ROOMS | {"agent"}:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_the_agent_imports_only_the_config_and_the_mqtt_client_of_the_daemon():
    wrong = [f"{name} imports {target}" for name, targets in graph().items() if room(name) == "agent"
             for target in targets
             if (folder(target) == "daemon" and room(target) not in AGENT_MAY_IMPORT | {"agent"})
             or (target.startswith("wattshift.daemon.mqtt.") and target != "wattshift.daemon.mqtt.client")]
    assert wrong == []
    assert "wattshift.drivers.nvml_gpu" in graph()["wattshift.daemon.agent.service"]  # the rules see it


def test_no_module_is_part_of_an_import_cycle():
    edges = graph()
    cycles, state = [], dict.fromkeys(edges, 0)  # 0 unseen, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if state[start] == 0:
            visit(start, [start])
    assert cycles == []


def test_the_rules_see_the_house():
    """The rules above would pass on an empty tree: make sure they read the real one."""
    edges = graph()
    assert len(edges) > 100
    assert "wattshift.model.snapshot" in edges["wattshift.policies.merit_order"]
    assert "wattshift.drivers.nvml_gpu" in edges["wattshift.drivers.catalog"]  # a function-level import counts
