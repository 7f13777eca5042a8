"""The `veil` command as a user types it: init a node, serve it, list, query, refuse, govern."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

VEIL = [sys.executable, "-m", "veil.cli"]


@pytest.fixture()
def served(tmp_path, analyst_home):
    folder = tmp_path / "node"
    out = subprocess.run(VEIL + ["node", "init", str(folder), "--rows", "2000"], capture_output=True, text=True,
                         check=True)
    assert "veil node serve" in out.stdout
    env = dict(os.environ, VEIL_LISTEN="127.0.0.1:0", VEIL_MTLS_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(VEIL + ["node", "serve", "--config", str(folder / "veil.toml")], env=env,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = re.search(r"\(port (\d+)\)", line).group(1)
    client_env = dict(os.environ, VEIL_TARGET=f"127.0.0.1:{port}", VEIL_HOME=str(analyst_home),
                      VEIL_TOKEN_FILE=str(folder / "tokens" / "alice.token"),
                      VEIL_CA=str(folder / "tls" / "ca.pem"))  # `veil node init` serves TLS by default
    client_env.pop("VEIL_TOKEN", None)
    try:
        yield client_env
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # graceful stop


def veil(env, *args):
    return subprocess.run(VEIL + list(args), env=env, capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(served):
    r = veil(served, "dataset", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["name"] == "patients"

    r = veil(served, "dataset", "show", "patients")
    assert r.returncode == 0 and "length_of_stay" in r.stdout and "patient_id" not in r.stdout
    assert "quality profile:" in r.stdout and "outside domain" in r.stdout  # as the certificate states it

    r = veil(served, "query", "submit", "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", "--purpose",
             "research", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    # `veil node init` writes a DP dataset (the default): each count carries discrete Laplace
    # noise of scale 2 at ε = 0.5; |noise| > 45 has probability about 1e-10 per count.
    assert {row["sex"] for row in rows} == {"F", "M"} and abs(sum(row["n"] for row in rows) - 2000) <= 90

    r = veil(served, "query", "submit", "SELECT region, AVG(cost) FROM patients GROUP BY region", "--purpose",
             "research")
    assert r.returncode == 0 and "Islands" in r.stdout and "suppressed" in r.stdout
    # Exact in JSON: each average is the decimal the node computed, never a binary float.
    r = veil(served, "query", "submit", "SELECT region, AVG(cost) AS c FROM patients GROUP BY region", "--purpose",
             "research", "--json")
    averages = [row["c"] for row in json.loads(r.stdout) if not row["suppressed"]]
    # Exact decimal strings (DP can clamp a small group's noisy average to the range's low end, 0).
    assert averages and all(isinstance(a, str) and Decimal(a) >= 0 for a in averages), averages

    r = veil(served, "query", "submit", "SELECT COUNT(*) FROM patients", "--purpose", "research", "--no-wait",
             "--json")
    qid = json.loads(r.stdout)["name"].removeprefix("queries/")
    for _ in range(100):
        status = json.loads(veil(served, "query", "status", qid, "--json").stdout)
        if status["state"] == "SUCCEEDED":
            break
        time.sleep(0.1)
    r = veil(served, "query", "result", qid, "--json")
    assert abs(json.loads(r.stdout)[0]["count"] - 2000) <= 45
    assert qid in veil(served, "query", "list").stdout


def test_cli_refusals_have_reasons_and_exit_codes(served):
    r = veil(served, "query", "submit", "SELECT postcode, COUNT(*) FROM patients GROUP BY postcode", "--purpose",
             "research")
    assert r.returncode == 2 and "GROUP_BY_NOT_ALLOWED" in r.stderr
    r = veil(served, "query", "submit", "SELECT COUNT(*) FROM patients", "--purpose", "gossip")
    assert r.returncode == 2 and "PURPOSE_NOT_ALLOWED" in r.stderr
    bad = dict(served, VEIL_TOKEN="wrong")
    bad.pop("VEIL_TOKEN_FILE")
    r = veil(bad, "dataset", "list")
    assert r.returncode == 2 and "INVALID_TOKEN" in r.stderr
    r = veil(dict(served, VEIL_TARGET="127.0.0.1:1"), "dataset", "list")
    assert r.returncode == 3 and "cannot reach" in r.stderr
    for r in (veil(served, "query", "status"), veil(served, "dataset", "list", "--nope"),
              veil(dict(served, VEIL_TOKEN_FILE="/nonexistent"), "dataset", "list")):
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_connection_flags_override_the_environment(served, tmp_path):
    """Every connection setting as a flag, with no VEIL_* variable set; a token issued to stdout
    and redirected to a file is that file's whole content."""
    env = {k: v for k, v in served.items() if not k.startswith("VEIL_") or k == "VEIL_HOME"}
    config = Path(served["VEIL_TOKEN_FILE"]).parent.parent / "veil.toml"
    issued = veil(env, "token", "issue", "--principal", "bob", "--ttl", "1h", "--config", str(config))
    assert issued.returncode == 0 and issued.stderr.startswith("# id ") and len(issued.stdout.splitlines()) == 1
    (tmp_path / "bob.token").write_text(issued.stdout)
    r = veil(env, "dataset", "list", "--json", "--target", served["VEIL_TARGET"], "--token-file",
             str(tmp_path / "bob.token"), "--ca", served["VEIL_CA"])
    assert r.returncode == 0 and json.loads(r.stdout)[0]["name"] == "patients", r.stderr
    r = veil(env, "dataset", "list", "--target", served["VEIL_TARGET"], "--token-file", served["VEIL_TOKEN_FILE"])
    assert r.returncode == 3  # no CA: the node's development certificate is not trusted


def test_earlier_spellings_still_work(served):
    assert json.loads(veil(served, "datasets", "--json").stdout)[0]["name"] == "patients"
    assert "length_of_stay" in veil(served, "dataset", "patients").stdout
    r = veil(served, "query", "SELECT COUNT(*) AS n FROM patients", "--purpose", "research", "--json")
    assert r.returncode == 0 and abs(json.loads(r.stdout)[0]["n"] - 2000) <= 45  # DP: scale 2
    assert veil(served, "queries").returncode == 0


def test_a_closed_pipe_version_and_completion(served):
    # stdout is a pipe whose reader has gone (`veil ... | head`): a quiet stop, no "Broken pipe".
    closed = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); from veil.cli import main; "
              "sys.exit(main(['completion', 'bash']))")
    out = subprocess.run([sys.executable, "-c", closed], env=served, capture_output=True, text=True, timeout=60)
    assert out.returncode == 141 and out.stderr == ""
    r = veil(served, "--version")
    assert r.returncode == 0 and re.match(r"veil \d+\.\d+\.\d+, veil-server \d+\.\d+\.\d+$", r.stdout.strip())
    for shell in ("bash", "zsh"):
        r = veil(served, "completion", shell)
        assert r.returncode == 0 and "dataset" in r.stdout and "--token-file" in r.stdout


def test_cli_governance(served, tmp_path):
    """An owner registers a dataset from a spec file, a reviewer lists it, the owner grants it,
    the analyst queries it and verifies its certificate offline."""
    import tomllib

    folder = Path(served["VEIL_TOKEN_FILE"]).parent.parent
    tokens = folder / "tokens"
    as_ = lambda who: dict(served, VEIL_TOKEN_FILE=str(tokens / f"{who}.token"))  # noqa: E731
    demo = tomllib.loads((folder / "veil.toml").read_text())["datasets"][0]
    spec = tmp_path / "clinic.toml"
    clinic = folder / "data" / "clinic.csv"  # its own file: one source is listed as one dataset
    clinic.write_bytes((folder / "data" / "patients.csv").read_bytes())
    lines = ["[[datasets]]", 'name = "clinic"', f'source = "{clinic}"',
             'purposes = ["research"]', 'classification = "internal"', "auto_approve = true", ""]
    for c in demo["columns"]:
        lines += ["[[datasets.columns]]"] + [f"{k} = {json.dumps(v)}" for k, v in c.items()] + [""]
    spec.write_text("\n".join(lines))

    r = veil(as_("olivia"), "dataset", "register", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "DRAFT"
    assert veil(as_("olivia"), "dataset", "submit", "clinic").returncode == 0
    r = veil(as_("olivia"), "dataset", "approve", "clinic", "--reason", "mine")
    assert r.returncode == 2 and "ROLE_NOT_ALLOWED" in r.stderr
    r = veil(as_("rita"), "dataset", "approve", "clinic", "--reason", "reviewed", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "LISTED", r.stderr
    r = veil(served, "query", "submit", "SELECT COUNT(*) FROM clinic", "--purpose", "research")
    assert r.returncode == 2 and "NO_GRANT" in r.stderr
    r = veil(served, "query", "explain", "SELECT COUNT(*) FROM clinic", "--purpose", "research", "--json")
    assert json.loads(r.stdout)["reason"] == "NO_GRANT"
    r = veil(as_("olivia"), "grant", "add", "--principal", "alice", "--dataset", "clinic", "--purpose", "research",
             "--max-queries", "5", "--json")
    assert r.returncode == 0, r.stderr
    r = veil(served, "query", "submit", "SELECT COUNT(*) FROM clinic", "--purpose", "research", "--json")
    # A registered dataset is DP unless its owner says otherwise: scale 2 at ε = 0.5.
    assert r.returncode == 0 and abs(json.loads(r.stdout)[0]["count"] - 2000) <= 45, r.stderr

    assert veil(served, "cert", "get", "clinic", "--out", str(tmp_path / "c.cert")).returncode == 0
    assert veil(served, "audit", "key", "--out", str(tmp_path / "node.pub")).returncode == 0
    r = veil(served, "cert", "verify", str(tmp_path / "c.cert"), "--key", str(tmp_path / "node.pub"))
    assert r.returncode == 0 and r.stdout.startswith("OK: datasets/clinic"), r.stderr
    raw = bytearray((tmp_path / "c.cert").read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "c.cert").write_bytes(bytes(raw))
    r = veil(served, "cert", "verify", str(tmp_path / "c.cert"), "--key", str(tmp_path / "node.pub"))
    assert r.returncode == 1 and "INVALID" in r.stderr
