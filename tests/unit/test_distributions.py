"""Two distributions from one repository, versioned together, each declaring what it imports.

``client/pyproject.toml`` builds ``veil`` (the library and the ``veil`` command);
``server/pyproject.toml`` builds ``veil-server`` (the node), which pins ``veil`` to its own
version. Each declares as dependencies exactly the third-party packages its code imports
(optional ones as extras), read from the syntax tree of every module it ships.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import veil
import veil_server

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {"veil": ROOT / "client", "veil-server": ROOT / "server"}
SOURCES = {"veil": ROOT / "client" / "veil", "veil-server": ROOT / "server" / "veil_server"}
# Import name -> distribution name, for every third-party package the code may import.
DISTRIBUTION_OF = {
    "grpc": "grpcio", "grpc_status": "grpcio-status", "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection", "google.protobuf": "protobuf",
    "google.rpc": "googleapis-common-protos", "numpy": "numpy", "pandas": "pandas", "gmpy2": "gmpy2",
    "cryptography": "cryptography", "phe": "phe", "distributed": "distributed", "pyarrow": "pyarrow",
    "scipy": "scipy",
    "sqlglot": "sqlglot", "duckdb": "duckdb", "opendp": "opendp", "psycopg": "psycopg",
    "pyspark": "pyspark", "shtab": "shtab", "veil": "veil", "jinja2": "jinja2", "markupsafe": "markupsafe",
    "prometheus_client": "prometheus_client",
}


def _project(name: str) -> dict:
    return tomllib.loads((PROJECTS[name] / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def _imports(package: Path, own: str) -> set[str]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", own):
                    continue
                found.add(".".join(name.split(".")[:2]) if top == "google" else top)
    return found


def test_one_version_for_both() -> None:
    client, server = _project("veil"), _project("veil-server")
    assert client["version"] == server["version"] == veil.__version__ == veil_server.__version__
    assert f"veil=={client['version']}" in server["dependencies"]


@pytest.mark.parametrize("dist, own", [("veil", "veil"), ("veil-server", "veil_server")])
def test_dependencies_are_what_the_code_imports(dist: str, own: str) -> None:
    project = _project(dist)
    declared = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    imported = _imports(SOURCES[dist], own)
    unknown = imported - DISTRIBUTION_OF.keys()
    assert not unknown, f"imports with no known distribution: {unknown}"
    needed = {DISTRIBUTION_OF[m] for m in imported}
    assert needed - declared - optional == set(), "imported but not declared"
    assert declared - needed == set(), "declared but never imported"


def test_the_library_leaves_the_node_s_packages_out() -> None:
    declared = {_name(r) for r in _project("veil")["dependencies"]}
    assert not declared & {"duckdb", "sqlglot", "opendp", "psycopg", "pyspark", "pyarrow", "veil-server"}


def test_import_veil_leaves_the_heavy_parts_for_first_use() -> None:
    code = ("import json, sys, veil; print(json.dumps(sorted(m for m in ('pandas', 'cryptography', 'gmpy2', "
            "'numpy', 'veil.crypto', 'veil.audit', 'veil_server') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_wheels_carry_the_contract() -> None:
    client = tomllib.loads((PROJECTS["veil"] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "v1/*.proto" in client["tool"]["setuptools"]["package-data"]["veil"]
    assert sorted(p.name for p in (SOURCES["veil"] / "v1").glob("*.proto")) == [
        "audit.proto", "catalog.proto", "federation.proto", "governance.proto", "model.proto", "query.proto"]
    server = tomllib.loads((PROJECTS["veil-server"] / "pyproject.toml").read_text(encoding="utf-8"))
    plugins = server["project"]["entry-points"]["veil.cli"]
    assert plugins == {"node": "veil_server.cli.node:register", "token": "veil_server.cli.token:register",
                       "audit": "veil_server.cli.audit:register",
                       "witness": "veil_server.cli.witness:register"}
