"""Both wheels built from this checkout, and fresh virtual environments made from them: the
analyst's (``veil`` alone, its dependencies from the package index) and the operator's.

Shared by the packaging test and ``bench/sdk_bench.py`` (the SDK's install size and import time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_ONLY = ("duckdb", "sqlglot", "opendp", "psycopg", "psycopg-binary", "pyspark", "pyarrow", "veil-server")


def run(*cmd: str | Path, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def build_wheels(out: Path) -> dict[str, Path]:
    """``{"veil": ..., "veil-server": ...}``: one wheel each, built from client/ and server/.

    Built from a copy, so that the build leaves no ``build/`` folder in the checkout (whose copies
    of the modules the lint and layout tests would then read)."""
    sources = out / "src"
    for project in ("client", "server"):
        shutil.copytree(ROOT / project, sources / project,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out,
        sources / "client", sources / "server")
    wheels = {"veil": list(out.glob("veil-*.whl")), "veil-server": list(out.glob("veil_server-*.whl"))}
    assert all(len(w) == 1 for w in wheels.values()), wheels
    return {name: found[0] for name, found in wheels.items()}


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed: a venv links its interpreter)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@dataclass
class Venv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def distributions(self) -> set[str]:
        out = run(self.python, "-c", "import importlib.metadata as m, json; "
                  "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))")
        return set(json.loads(out.stdout))


def fresh_venv(path: Path) -> Venv:
    # The base interpreter, not this venv's: nothing of the development environment leaks in.
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    run(base if base.exists() else sys.executable, "-m", "venv", path)
    return Venv(path)


def analyst_venv(path: Path, wheels: dict[str, Path]) -> tuple[Venv, int]:
    """A fresh venv with the ``veil`` wheel alone (dependencies from the index); the bytes it added."""
    env = fresh_venv(path)
    before = tree_bytes(path)
    run(env.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheels["veil"])
    return env, tree_bytes(path) - before


def operator_venv(path: Path, wheels: dict[str, Path]) -> Venv:
    """A fresh venv with both wheels, their dependencies taken from this development environment
    (a path entry, after the venv's own packages: the wheels' code and entry points win)."""
    env = fresh_venv(path)
    site = Path(run(env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "veil_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    run(env.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--ignore-installed", wheels["veil"], wheels["veil-server"])
    return env
