"""The packages' layering (docs/architecture.md), read from the source: which package may
import which, no circles, no private names across packages, and fer-kiosk's commands of
other packages found through entry points rather than imports."""

from __future__ import annotations

import ast
import logging
from importlib import metadata
from pathlib import Path

from edge.cli import COMMANDS_GROUP, add_plugin_commands, build_parser

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "dashboard", "training", "converter")
# The modules at edge/'s top that every part of it shares; they import no part of edge below.
EDGE_BASE = {"edge", "edge.config", "edge.contract", "edge.backoff"}
# edge's entry points, which put the parts together: they may import any of them.
EDGE_TOP = {"edge.cli", "edge.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of a file, those inside
    functions included (a lazy import is still a dependency)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def project_imports() -> dict[str, list[tuple[str, list[str]]]]:
    return {
        module_name(path): [(m, names) for m, names in imports_of(path) if m.split(".")[0] in PACKAGES]
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def part_of(module: str) -> str:
    """The part of the house a module belongs to: edge's sub-package (edge.vision), edge's
    base or top, or another top-level package."""
    if module in EDGE_BASE:
        return "edge(base)"
    if module in EDGE_TOP:
        return "edge(top)"
    parts = module.split(".")
    if parts[0] == "edge" and len(parts) >= 2:
        return ".".join(parts[:2])
    return parts[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of a small directed graph, each once (from its smallest member)."""
    found = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def dependencies() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imported in project_imports().items():
        for target, names in imported:
            # "from edge import x": x may be a sub-package; count what is really taken
            targets = [f"{target}.{n}" for n in names if (ROOT / target.replace(".", "/") / n).is_dir()]
            for dependency in targets or [target]:
                a, b = part_of(module), part_of(dependency)
                if a != b:
                    edges.setdefault(a, set()).add(b)
    return edges


def test_no_circle_between_packages_or_edges_parts():
    edges = dependencies()
    assert cycles(edges) == []
    # and the graph the rules speak of is the real one, not an empty reading of it
    assert {"edge.vision", "edge.camera", "edge.mqtt", "edge.daemon", "edge.tools"} <= set(edges)
    assert "edge(base)" in edges["edge.vision"] and "edge.vision" in edges["edge.daemon"]


def test_imports_go_one_way_down_the_layers():
    edges = dependencies()
    # edge is the bottom of the house: the dashboard, training and converter use it, never
    # the reverse (the dashboard joins fer-kiosk through an entry point, below)
    assert edges.get("edge(base)", set()) == set()
    for part, targets in edges.items():
        if part.startswith("edge"):
            assert not targets & {"dashboard", "training", "converter"}, (part, targets)
    # nothing imports edge's command line, and the daemon's parts import no tool
    assert not any("edge(top)" in targets for targets in edges.values())
    for part in ("edge.camera", "edge.vision", "edge.visits", "edge.mqtt", "edge.daemon"):
        assert "edge.tools" not in edges.get(part, set()), part
    assert "edge.daemon" not in edges.get("edge.tools", set())


def test_no_private_name_is_imported_across_packages():
    crossings = []
    for module, imported in project_imports().items():
        for target, names in imported:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and part_of(module) != part_of(target):
                crossings.append(f"{module} imports {', '.join(private)} from {target}")
    assert crossings == []


def test_the_layering_checks_catch_a_circle_and_a_private_name(tmp_path):
    # the checks themselves, on a made-up graph and source
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from edge.config import _hidden, shown\n")
    assert imports_of(source) == [("edge.config", ["_hidden", "shown"])]


def test_the_dashboard_joins_fer_kiosk_through_its_entry_point():
    (entry,) = [e for e in metadata.entry_points(group=COMMANDS_GROUP) if e.name == "dashboard"]
    assert entry.value == "dashboard.__main__"
    args = build_parser().parse_args(["dashboard", "export", "--from", "2026-12-01"])
    assert args.handler.__module__ == "dashboard.__main__" and args.action == "export"


def test_a_command_that_cannot_load_is_left_out_with_a_warning(caplog):
    import argparse

    parser = argparse.ArgumentParser(prog="fer-kiosk")
    sub = parser.add_subparsers(dest="command", required=True)
    broken = metadata.EntryPoint(name="broken", value="no_such_package_here.__main__", group=COMMANDS_GROUP)
    working = metadata.EntryPoint(name="dashboard", value="dashboard.__main__", group=COMMANDS_GROUP)
    with caplog.at_level(logging.WARNING):
        add_plugin_commands(sub, [broken, working])
    assert [r.getMessage() for r in caplog.records] == [
        "fer-kiosk broken is unavailable: ModuleNotFoundError: No module named 'no_such_package_here'"
    ]
    assert parser.parse_args(["dashboard"]).action == "serve"
