"""Lint rules that are security properties, checked on the syntax tree of every shipped module.

* No non-cryptographic randomness: the ``random`` module is forbidden in ``client/`` and
  ``server/``; numpy's generators (PCG64, Philox, ``default_rng``, ``np.random.*``) are forbidden
  everywhere except the synthetic-data generator, which makes rows, never keys, masks or shares.
* No deserialisation that can run code: ``pickle`` and friends, ``marshal``, ``shelve``,
  ``eval``/``exec``, ``yaml.load``, ``allow_pickle=True``, ``read_pickle``.
* Paillier input is validated at every entry point: the server never builds a ``PublicKey`` or a
  ``Ciphertext`` from wire bytes except through the validating constructors
  (``PublicKey.from_bytes``, ``Ciphertext.from_bytes``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from . import ledger

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("client", "server") for p in (ROOT / d).rglob("*.py") if "/v1/" not in str(p))
# Synthetic rows from a fixed seed, for reproducible demos and benchmarks (see its docstring).
NUMPY_RNG_ALLOWED = {"server/veil_server/cli/demo.py"}
FORBIDDEN_MODULES = {"random", "pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
NUMPY_RNG = {"random", "default_rng", "PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937", "RandomState"}


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:  # the positive control's probe, treated as server code
        return f"server/{p.name}"


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    server = rel(path).startswith("server/")
    for node in ast.walk(tree):
        where = f"{rel(path)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    out.append(f"{where} imports {a.name}")
                if a.name == "numpy.random" and rel(path) not in NUMPY_RNG_ALLOWED:
                    out.append(f"{where} imports numpy.random")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in FORBIDDEN_MODULES:
                out.append(f"{where} imports from {mod}")
            if (mod == "numpy.random" or (mod == "numpy" and any(a.name == "random" for a in node.names))) \
                    and rel(path) not in NUMPY_RNG_ALLOWED:
                out.append(f"{where} imports numpy's generators")
        elif isinstance(node, ast.Attribute):
            if node.attr in NUMPY_RNG and isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy") \
                    and rel(path) not in NUMPY_RNG_ALLOWED:
                out.append(f"{where} uses numpy.{node.attr}")
            if node.attr in ("read_pickle", "to_pickle"):
                out.append(f"{where} uses {node.attr}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if isinstance(f, ast.Name) and name in ("eval", "exec", "__import__"):
                out.append(f"{where} calls {name}")
            if name == "load" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and f.value.id == "yaml":
                out.append(f"{where} calls yaml.load")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    out.append(f"{where} passes allow_pickle")
            if server and isinstance(f, ast.Name) and name in ("PublicKey", "Ciphertext"):
                out.append(f"{where} builds {name}(...) directly; use {name}.from_bytes (it validates)")
    return out


def test_no_weak_randomness_no_pickle_validated_paillier_input():
    assert len(SOURCES) > 50
    problems = [f for p in SOURCES for f in findings(p)]
    assert not problems, "\n".join(problems)
    ledger.record("attack", "lint", f"8 static rules over all {len(SOURCES)} shipped modules: no `random`, no numpy "
                  "RNG outside synthetic data, no pickle/marshal/eval, Paillier input only via validating "
                  "constructors", 8)


def test_the_rules_catch_what_they_forbid(tmp_path):
    """Positive control: each rule fires on a file that breaks it."""
    bad = tmp_path / "probe.py"
    bad.write_text("import random\nimport pickle\nimport numpy as np\nfrom veil.crypto import PublicKey\n"
                   "r = np.random.default_rng(1)\nk = PublicKey(15)\nx = eval('1')\nnp.load('f', allow_pickle=True)\n")
    found = findings(bad)
    assert len(found) == 6, found
