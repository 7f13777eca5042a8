"""The layout's rules, checked on the syntax tree of every module (ARCHITECTURE.md draws them).

* No import circles between modules, counting every import: at module level, inside functions,
  and under ``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader follows).
* The library (``veil``) never imports the node (``veil_server``).
* Below the servicers nothing knows gRPC: the query path, disclosure control, state and
  governance import neither ``grpc`` (nor its status, health or reflection packages, nor the
  generated ``*_pb2_grpc`` stubs) nor anything of ``veil_server.api``. Protobuf messages are
  data and may be built there.
* Nothing but the node's command line imports ``veil_server.api``, and nothing imports the
  command line.
* The web console (``veil_server.console``) is a front end like ``api``: only ``api`` (which starts
  it next to the gRPC port) and the command line import it -- and ``config``, for its settings
  parser alone -- and it imports neither ``api`` nor the command line, nor any node internals
  behind the RPCs it calls (``node``, ``query``, ``state``, ``governance``, ``disclosure``,
  ``audit``, ``federation``): every page goes through the node's RPCs, so there is no second
  policy path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"veil": ROOT / "client" / "veil", "veil_server": ROOT / "server" / "veil_server"}
GRPC = ("grpc", "grpc_status", "grpc_health", "grpc_reflection")
NO_GRPC = ("veil_server.query", "veil_server.disclosure", "veil_server.state", "veil_server.governance")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, by its full name."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from package import module`` depends on that module; ``from module import name``
            # on the module (a package's __init__ runs for either, and is not counted).
            out.update(f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names)
    return out


def _internal(imported: str) -> str | None:
    """The project module an imported name belongs to (the longest known prefix)."""
    parts = imported.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}
GRAPH = {name: {m for i in names if (m := _internal(i)) and m != name} for name, names in IMPORTS.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_walk_sees_every_package() -> None:
    assert {"veil.sdk", "veil.cli", "veil_server.node", "veil_server.api.server",
            "veil_server.query.planner", "veil_server.state.store"} <= MODULES.keys()
    assert "veil_server.query.engine" in GRAPH["veil_server.query.routing"]


def test_no_import_circles() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    graph = {k: set(v) for k, v in GRAPH.items()}
    graph["veil_server.query.plan"].add("veil_server.query.planner")  # planner imports plan
    assert any({"veil_server.query.plan", "veil_server.query.planner"} <= set(c) for c in _cycles(graph))


def test_the_library_never_imports_the_node() -> None:
    offenders = sorted(f"{name} imports {i}" for name, names in IMPORTS.items() if _within(name, "veil")
                       for i in names if _within(i, "veil_server"))
    assert offenders == []


@pytest.mark.parametrize("layer", NO_GRPC)
def test_no_grpc_below_the_servicers(layer: str) -> None:
    offenders = sorted(
        f"{name} imports {i}" for name, names in IMPORTS.items() if _within(name, layer) for i in names
        if i.split(".")[0] in GRPC or i.endswith("_pb2_grpc") or "_pb2_grpc." in i
        or _within(i, "veil_server.api") or _within(i, "veil_server.cli"))
    assert offenders == []


def test_only_the_command_line_reaches_the_servicers() -> None:
    offenders = sorted(f"{name} imports {dep}" for name, deps in GRAPH.items()
                       if not _within(name, "veil_server.api") and not _within(name, "veil_server.cli")
                       for dep in deps if _within(dep, "veil_server.api"))
    assert offenders == []
    callers_of_cli = sorted(name for name, deps in GRAPH.items() if not _within(name, "veil_server.cli")
                            for dep in deps if _within(dep, "veil_server.cli"))
    assert callers_of_cli == []


CONSOLE = "veil_server.console"
BEHIND_THE_RPCS = ("veil_server.node", "veil_server.query", "veil_server.state", "veil_server.governance",
                   "veil_server.disclosure", "veil_server.audit", "veil_server.federation", "veil_server.api",
                   "veil_server.cli")


def test_only_the_front_ends_start_the_console() -> None:
    offenders = sorted(f"{name} imports {dep}" for name, deps in GRAPH.items()
                       if not any(_within(name, p) for p in (CONSOLE, "veil_server.api", "veil_server.cli"))
                       for dep in deps if _within(dep, CONSOLE)
                       and not (name == "veil_server.config" and dep == f"{CONSOLE}.settings"))
    assert offenders == []


def test_the_console_reaches_the_node_only_through_its_rpcs() -> None:
    offenders = sorted(f"{name} imports {dep}" for name, deps in GRAPH.items() if _within(name, CONSOLE)
                       for dep in deps if any(_within(dep, p) for p in BEHIND_THE_RPCS))
    assert offenders == []
    assert f"{CONSOLE}.calls" in GRAPH[f"{CONSOLE}.app"]
