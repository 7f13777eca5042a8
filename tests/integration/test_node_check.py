"""`veil node check` through the real command, on broken configs; `veil node serve` runs it first.

Each broken config starts from the folder `veil node init` writes (which must pass) and breaks
one or more things; the check lists every problem by key path and exits 2, binds nothing and
writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

VEIL = [sys.executable, "-m", "veil.cli"]


def veil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    return subprocess.run(VEIL + list(args), capture_output=True, text=True, timeout=120, env={**base, **(env or {})})


@pytest.fixture(scope="module")
def node_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("check") / "node"
    r = veil("node", "init", str(folder), "--rows", "200")
    assert r.returncode == 0, r.stderr
    return folder


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def write_variant(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of the node's config with ``edit`` applied to its text, next to the original (so
    the relative paths it names still resolve)."""
    text = (folder / "veil.toml").read_text()
    out = folder / f"variant-{tmp_path.name}.toml"
    out.write_text(edit(text))
    return out


def test_the_folder_init_writes_passes(node_folder):
    before = files_under(node_folder)
    r = veil("node", "check", "--config", str(node_folder / "veil.toml"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(": ok")
    r = veil("node", "check", "--config", str(node_folder / "veil.toml"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True and json.loads(r.stdout)["errors"] == []
    assert files_under(node_folder) == before  # nothing written: no state database, no audit log, no key


def _add_to_node(key_line: str):
    return lambda text: text.replace("[node]\n", f"[node]\n{key_line}\n", 1)


BROKEN = [
    # (what is broken, edit, the key paths every reported problem must name, a phrase of the message)
    ("typo in [node]", _add_to_node("min_group_sise = 10"), ["node.min_group_sise"], "did you mean min_group_size"),
    ("wrong type", lambda t: t.replace("workers = 4", 'workers = "four"', 1), ["node.workers"], "must be an integer, not a string"),
    ("out of range", lambda t: t.replace("workers = 4", "workers = 500", 1), ["node.workers"], "between 1 and 64"),
    ("unknown section", lambda t: t + "\n[metrix]\nenabled = true\n", ["metrix"], "unknown key in the top level"),
    ("typo in a dataset column", lambda t: t.replace("scale =", "scael =", 1), ["datasets[0].columns["],
     "did you mean scale"),
    ("a section that is not a table", lambda t: 'console = "on"\n' + t, ["console"], "must be a table"),
    ("wrong choice", lambda t: t.replace('role = "analyst"', 'role = "analist"', 1), ["principals["],
     "must be one of"),
]


@pytest.mark.parametrize("what,edit,keys,phrase", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_config_is_refused_naming_the_key(node_folder, tmp_path, what, edit, keys, phrase):
    config = write_variant(node_folder, tmp_path, edit)
    assert config.read_text() != (node_folder / "veil.toml").read_text(), what
    before = files_under(node_folder)
    r = veil("node", "check", "--config", str(config), "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["errors"]
    assert any(any(e["key"].startswith(k) for k in keys) for e in report["errors"]), report
    assert any(phrase in e["message"] for e in report["errors"]), report
    # Plain text: one line per problem on stderr, each naming the key path, and a total.
    r = veil("node", "check", "--config", str(config))
    assert r.returncode == 2 and r.stdout == ""
    assert any(k in r.stderr for k in keys) and phrase in r.stderr and "error(s)" in r.stderr
    assert files_under(node_folder) == before


def test_every_error_is_listed_at_once(node_folder, tmp_path):
    def edit(text: str) -> str:
        text = _add_to_node("min_group_sise = 10")(text).replace("workers = 4", "workers = true", 1)
        return text.replace("scale =", "scael =", 1) + "\n[disclosure]\nrefusals_per_dai = 3\n"

    r = veil("node", "check", "--config", str(write_variant(node_folder, tmp_path, edit)), "--json")
    assert r.returncode == 2
    keys = [e["key"] for e in json.loads(r.stdout)["errors"]]
    assert "node.min_group_sise" in keys and "node.workers" in keys and "disclosure.refusals_per_dai" in keys
    assert any(k.startswith("datasets[0].columns[") and k.endswith(".scael") for k in keys)


def test_a_semantic_error_the_parser_finds_is_reported(node_folder, tmp_path):
    # Well-typed keys that do not fit together: a grant naming an undeclared principal.
    config = write_variant(node_folder, tmp_path, lambda t: t + '\n[[grants]]\nprincipal = "mallory"\n'
                           'dataset = "patients"\npurpose = "research"\n')
    r = veil("node", "check", "--config", str(config), "--json")
    assert r.returncode == 2
    assert any("grants[" in e["message"] and "principal" in e["message"] for e in json.loads(r.stdout)["errors"])


def test_not_toml_and_missing_file(node_folder, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname = 1\n")
    r = veil("node", "check", "--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = veil("node", "check", "--config", str(tmp_path / "absent.toml"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_serve_runs_the_check_first_and_refuses(node_folder, tmp_path):
    config = write_variant(node_folder, tmp_path, _add_to_node("min_group_sise = 10"))
    before = files_under(node_folder)
    r = veil("node", "serve", "--config", str(config), env={"VEIL_LISTEN": "127.0.0.1:0",
                                                             "VEIL_MTLS_LISTEN": "127.0.0.1:0"})
    assert r.returncode == 2
    assert "node refused to start" in r.stderr and "node.min_group_sise" in r.stderr
    assert "did you mean min_group_size" in r.stderr and "Traceback" not in r.stderr
    assert files_under(node_folder) == before  # refused before the state folder or a key was written


def test_env_overrides_are_checked_too(node_folder):
    r = veil("node", "check", "--config", str(node_folder / "veil.toml"), env={"VEIL_WORKERS": "0"})
    assert r.returncode == 2 and "node.workers" in r.stderr


def test_the_federation_demo_folders_pass(tmp_path):
    """The member folders the federated demo writes ([federation], peers, federated datasets) pass."""
    from veil_server.cli.federation_demo import init_federation
    from veil_server.config_check import check_config

    members = init_federation(tmp_path, rows=(200, 200, 200))
    for m in members.values():
        assert check_config(m.config, env={}) == [], m.name


def test_init_names_the_node(tmp_path):
    r = veil("node", "init", str(tmp_path / "n"), "--rows", "100", "--dev", "--name", "north")
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((tmp_path / "n" / "veil.toml").read_text())["node"]["name"] == "north"
    r = veil("node", "init", str(tmp_path / "m"), "--rows", "100", "--name", 'bad"name')
    assert r.returncode == 2 and "--name" in r.stderr and not (tmp_path / "m").exists()
