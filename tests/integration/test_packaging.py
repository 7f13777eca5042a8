"""The two wheels as users install them: an analyst's venv with ``veil`` alone queries a node
served from an operator's venv with ``veil-server``, over TLS on loopback, and verifies the
node's audit log offline; the analyst's venv holds none of the node's heavy packages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from .distribution_support import NODE_ONLY, analyst_venv, build_wheels, operator_venv, run

pytestmark = [pytest.mark.packaging, pytest.mark.slow]
SDK_LIMIT_BYTES = 250 * 2**20

QUERY = """
import json, sys, veil
target, token, ca = sys.argv[1:4]
with veil.connect(target, token=open(token).read().strip(), ca=ca) as node:
    names = [d.name for d in node.datasets()]
    df = node.query("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research")
print(json.dumps({"datasets": names, "rows": df.to_dict(orient="records"),
                  "node_only": sorted(m for m in ("duckdb", "sqlglot", "opendp", "psycopg", "pyspark", "pyarrow",
                                                  "veil_server") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    return build_wheels(tmp_path_factory.mktemp("dist"))


def test_each_wheel_holds_its_own_package(wheels) -> None:
    with zipfile.ZipFile(wheels["veil"]) as z:
        names = z.namelist()
        assert "veil/v1/query.proto" in names and "veil/v1/query_pb2.py" in names and "veil/py.typed" in names
        assert not [n for n in names if n.startswith("veil_server/")]
    with zipfile.ZipFile(wheels["veil-server"]) as z:
        names = z.namelist()
        assert "veil_server/api/server.py" in names and not [n for n in names if n.startswith("veil/")]
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "Requires-Dist: veil==0.1.0" in meta
    assert "[veil.cli]" in entry_points and "node = veil_server.cli.node:register" in entry_points


def test_an_analyst_with_veil_alone_queries_and_verifies_a_node(wheels, tmp_path) -> None:
    sdk, added = analyst_venv(tmp_path / "analyst", wheels)
    installed = sdk.distributions()
    assert "veil" in installed
    assert not installed & set(NODE_ONLY), installed & set(NODE_ONLY)
    assert added <= SDK_LIMIT_BYTES, f"veil added {added / 2**20:.0f} MiB to a fresh venv"
    # What a client in another language compiles: the contract and the google.rpc error details.
    site = Path(run(sdk.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    assert (site / "veil" / "v1" / "query.proto").exists() and (site / "google" / "rpc" / "error_details.proto").exists()

    # Without veil-server, the node's verbs say how to get them.
    out = subprocess.run([sdk.bin / "veil", "node", "serve"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "pip install veil-server" in out.stderr and "Traceback" not in out.stderr

    ops = operator_venv(tmp_path / "operator", wheels)
    folder = tmp_path / "node"
    run(ops.bin / "veil", "node", "init", folder, "--rows", "2000", "--disclosure", "exact")
    env = dict(os.environ, VEIL_LISTEN="127.0.0.1:0", VEIL_MTLS_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([ops.bin / "veil", "node", "serve", "--config", folder / "veil.toml"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = re.search(r"\(port (\d+)\)", line)
        assert port, f"the node did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        target, ca = f"127.0.0.1:{port.group(1)}", str(folder / "tls" / "ca.pem")
        analyst = dict(os.environ, VEIL_HOME=str(tmp_path / "home"))
        analyst.pop("VEIL_TOKEN", None)

        out = run(sdk.python, "-c", QUERY, target, folder / "tokens" / "alice.token", ca, env=analyst)
        answer = json.loads(out.stdout)
        assert answer["datasets"] == ["patients"] and answer["node_only"] == []
        assert sum(row["n"] for row in answer["rows"]) == 2000

        auditor = dict(analyst, VEIL_TARGET=target, VEIL_CA=ca,
                       VEIL_TOKEN_FILE=str(folder / "tokens" / "audra.token"))
        run(sdk.bin / "veil", "audit", "key", "--out", tmp_path / "node.pub", env=auditor)
        run(sdk.bin / "veil", "audit", "export", tmp_path / "audit.jsonl", env=auditor)
        verified = run(sdk.bin / "veil", "audit", "verify", tmp_path / "audit.jsonl", "--key", tmp_path / "node.pub",
                       env=analyst)
        assert verified.stdout.startswith("OK:")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
