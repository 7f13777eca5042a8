"""Issue 20: a real `veil node serve` process with `--log-format json` and `--metrics-listen`, a
known workload through the `veil` command, then the log lines parsed and the metrics scraped.

The workload: one released query (alice), one query refused by policy (a hidden column), one call
with a token the node does not know, and a list of datasets. The counters must show exactly
those; the log must hold one JSON object per line, one line per RPC with its fields, and neither
alice's token nor a released value.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

VEIL = [sys.executable, "-m", "veil.cli"]
SQL = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex"


@pytest.fixture(scope="module")
def workload(tmp_path_factory, analyst_home):
    tmp = tmp_path_factory.mktemp("telemetry")
    folder = tmp / "node"
    subprocess.run(VEIL + ["node", "init", str(folder), "--rows", "2000"], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env.update(VEIL_LISTEN="127.0.0.1:0", VEIL_MTLS_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="INFO")
    log_path = tmp / "node.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(VEIL + ["node", "serve", "--config", str(folder / "veil.toml"), "--log-format", "json",
                                        "--metrics-listen", "127.0.0.1:0"],
                                env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            port = re.search(r"\(port (\d+)\)", proc.stdout.readline()).group(1)
            metrics_url = re.search(r"veil metrics on (\S+)", proc.stdout.readline()).group(1)
            client = dict(env, VEIL_TARGET=f"127.0.0.1:{port}", VEIL_HOME=str(analyst_home),
                          VEIL_TOKEN_FILE=str(folder / "tokens" / "alice.token"), VEIL_CA=str(folder / "tls" / "ca.pem"))

            def veil(*args, **extra):
                return subprocess.run(VEIL + list(args), env={**client, **extra}, capture_output=True, text=True,
                                      timeout=300)

            ok = veil("query", "submit", SQL, "--purpose", "research", "--json")
            assert ok.returncode == 0, ok.stderr
            refused = veil("query", "submit", "SELECT COUNT(patient_id) AS n FROM patients", "--purpose", "research")
            assert refused.returncode == 2
            bad_token = tmp / "bad.token"
            bad_token.write_text("not-a-token-the-node-issued")
            assert veil("dataset", "list", VEIL_TOKEN_FILE=str(bad_token)).returncode == 2
            assert veil("dataset", "list").returncode == 0
            scrape = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    return {"rows": json.loads(ok.stdout), "refused": refused.stderr, "metrics": scrape,
            "log": log_path.read_text(), "token": (folder / "tokens" / "alice.token").read_text().strip()}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_workload(workload):
    m = samples(workload["metrics"])
    submit = "/veil.v1.QueryService/SubmitQuery"
    assert value(m, "veil_rpc_requests_total", method=submit, code="OK") == 1
    assert "[HIDDEN_COLUMN]" in workload["refused"]  # the reason the CLI shows is the one counted below
    codes = {labels for (name, labels) in m if name == "veil_rpc_requests_total" and ("method", submit) in labels}
    refused_code = [dict(labels)["code"] for labels in codes if dict(labels)["code"] != "OK"]
    assert len(refused_code) == 1 and value(m, "veil_rpc_requests_total", method=submit, code=refused_code[0]) == 1
    listing = "/veil.v1.CatalogService/ListDatasets"
    assert value(m, "veil_rpc_requests_total", method=listing, code="OK") == 1
    assert value(m, "veil_rpc_requests_total", method=listing, code="UNAUTHENTICATED") == 1
    assert value(m, "veil_refusals_total", reason="INVALID_TOKEN", code="UNAUTHENTICATED") == 1
    assert value(m, "veil_refusals_total", reason="HIDDEN_COLUMN", code=refused_code[0]) == 1
    # Latency histograms by method and code: one observation per call.
    assert value(m, "veil_rpc_duration_seconds_count", method=submit, code="OK") == 1
    # The query's life: one submitted and released (a refused submission stores no query).
    assert value(m, "veil_query_transitions_total", state="PENDING_APPROVAL") == 1
    assert value(m, "veil_query_transitions_total", state="APPROVED") == 1
    assert value(m, "veil_query_transitions_total", state="RUNNING") == 1
    assert value(m, "veil_query_transitions_total", state="SUCCEEDED") == 1
    assert value(m, "veil_query_transitions_total", state="FAILED") == 0
    assert value(m, "veil_releases_total", dataset="patients") == 1
    # `veil node init` writes a DP dataset at ε = 0.5 per query: one release spent exactly that.
    assert value(m, "veil_epsilon_spent_total", dataset="patients") == pytest.approx(0.5)
    released = value(m, "veil_released_ciphertexts_total", dataset="patients")
    assert released >= 1
    assert value(m, "veil_crypto_operations_total", operation="encrypt_result") == released
    assert value(m, "veil_crypto_seconds_count", operation="encrypt_result") == 1
    assert value(m, "veil_engine_seconds_count", engine="csv") == 1
    assert value(m, "veil_audit_append_seconds_count") >= 3  # start, submission, release at least
    assert value(m, "veil_state_db_seconds_count", operation="create_query") == 1
    assert value(m, "veil_state_db_seconds_count", operation="transition") >= 2
    # Nothing is left unfinished after the workload.
    for state in ("PENDING_APPROVAL", "APPROVED", "RUNNING"):
        assert ("veil_open_queries", (("state", state),)) in m and value(m, "veil_open_queries", state=state) == 0


def test_json_log_has_one_object_per_rpc_and_no_secret(workload):
    lines = [line for line in workload["log"].splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    for e in events:
        assert {"time", "level", "logger", "node", "event"} <= set(e)
        assert e["node"] == "demo-node"
    rpcs = [e for e in events if e["event"] == "rpc"]
    for e in rpcs:
        assert {"method", "principal", "query_id", "request_id", "duration_ms", "outcome", "code", "reason"} <= set(e)
        assert e["duration_ms"] >= 0 and e["outcome"] in ("ok", "refused")
    submits = [e for e in rpcs if e["method"] == "/veil.v1.QueryService/SubmitQuery"]
    assert len(submits) == 2
    done = [e for e in submits if e["code"] == "OK"][0]
    assert done["principal"] == "alice" and done["query_id"].startswith("queries/") and done["request_id"]
    assert done["outcome"] == "ok" and done["reason"] is None
    refused = [e for e in submits if e["code"] != "OK"][0]
    assert refused["outcome"] == "refused" and refused["reason"] == "HIDDEN_COLUMN" and refused["principal"] == "alice"
    bad = [e for e in rpcs if e["code"] == "UNAUTHENTICATED"]
    assert len(bad) == 1 and bad[0]["reason"] == "INVALID_TOKEN" and bad[0]["principal"] is None
    # Later calls on the query carry its id (wait, result): the analyst's calls can be followed.
    assert any(e["query_id"] == done["query_id"] and e["method"] != done["method"] for e in rpcs)

    text = workload["log"]
    assert workload["token"] not in text and "not-a-token-the-node-issued" not in text
    # No released value: compare whole words of every field but the time and duration.
    words = set()
    for e in events:
        for k, v in e.items():
            if k not in ("time", "duration_ms"):
                words.update(re.split(r"[^0-9A-Za-z.]+", str(v)))
    for row in workload["rows"]:
        assert str(row["n"]) not in words


def test_replica_heartbeats_are_counted(tmp_path, state_postgres):
    """With state in PostgreSQL (replicas), each heartbeat is counted; off-loop waiting only."""
    import time

    from tests.integration.test_governance_walkthrough import use_postgres_state
    from veil_server.api.server import run_server
    from veil_server.cli.demo import init_node_folder
    from veil_server.config import load_config

    init_node_folder(tmp_path / "node", rows=300)
    use_postgres_state(tmp_path / "node", state_postgres)
    config = load_config(tmp_path / "node" / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=1.0, metrics_listen="127.0.0.1:0") as running:
        assert running.metrics_port
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        beats = 0.0
        for _ in range(300):  # a heartbeat every 2 s: wait for two
            beats = value(samples(urllib.request.urlopen(url, timeout=30).read().decode()),
                          "veil_replica_heartbeats_total", outcome="ok")
            if beats >= 2:
                break
            time.sleep(0.2)
        assert beats >= 2
        failed = value(samples(urllib.request.urlopen(url, timeout=30).read().decode()),
                       "veil_replica_heartbeats_total", outcome="failed")
        assert failed == 0


def test_open_queries_by_state(tmp_path, analyst_home):
    """A query waiting for an owner shows in veil_open_queries{state="PENDING_APPROVAL"}."""
    import veil
    from veil_server.api.server import run_server
    from veil_server.cli.demo import init_node_folder
    from veil_server.config import load_config

    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=300)
    config = folder / "veil.toml"
    config.write_text(config.read_text().replace("auto_approve = true", "auto_approve = false"))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0,
                    metrics_listen="127.0.0.1:0") as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            alice.submit(SQL, purpose="research", request_id="telemetry-open-1")
            alice.submit(SQL, purpose="planning", request_id="telemetry-open-2")
        m = samples(urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=30)
                    .read().decode())
    assert value(m, "veil_open_queries", state="PENDING_APPROVAL") == 2
    assert value(m, "veil_open_queries", state="RUNNING") == 0
    assert value(m, "veil_query_transitions_total", state="PENDING_APPROVAL") == 2  # each created in that state
    assert value(m, "veil_query_transitions_total", state="APPROVED") == 0
