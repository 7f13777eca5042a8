"""Metering through gRPC: the ledger's totals equal an independent count of what this test
did; grant quotas answer RESOURCE_EXHAUSTED naming the quota; `veil usage` and `veil budget`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import veil
from veil.cli import main as cli_main
from veil_server.config import load_config
from veil_server.api.server import run_server

from tests.security.disclosure_support import write_node


@pytest.fixture()
def cluster(tmp_path, analyst_home, other_home):
    tokens = write_node(tmp_path, quota="quota = { queries_per_day = 3 }")
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        yield running.target, tokens


def test_ledger_matches_what_was_done(cluster, analyst_home, other_home, capsys):
    target, tokens = cluster
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    done = {"submitted": 0, "released": 0, "cells": 0, "eps": 0.0}
    with veil.connect(target, token=tokens["alice"], home=analyst_home) as alice:
        for sql, table in [("SELECT dept, COUNT(*) FROM {} GROUP BY dept", "people"),
                           ("SELECT COUNT(*), SUM(secret) FROM {}", "people"),
                           ("SELECT COUNT(*) FROM {}", "people_dp")]:
            df = alice.query(sql.format(table), purpose="research")
            done["submitted"] += 1
            done["released"] += 1
            released_rows = int((~df["suppressed"]).sum())
            done["cells"] += released_rows * (len(df.columns) - 1 - (1 if "dept" in df.columns else 0))
            done["eps"] += 0.5 if table == "people_dp" else 0.0
        assert alice.explain("SELECT COUNT(*) FROM people_dp", purpose="research")["epsilon_cost"] == 0.5
        b = alice.budget("people_dp")
        assert b.dp_enabled and b.spent == 0.5 and b.remaining == 2.5 and b.limit == 3.0
        assert not alice.budget("people").dp_enabled and alice.budget("people").disclosure_mode == "exact"
        rows = alice.usage(since=start)
        assert {r.principal for r in rows} == {"alice"}  # an analyst sees only its own use
    total = {k: 0 for k in ("submitted", "approved", "released", "cells", "eps")}
    for r in rows:
        total["submitted"] += r.queries_submitted
        total["approved"] += r.queries_approved
        total["released"] += r.queries_released
        total["cells"] += r.cells_released
        total["eps"] += r.epsilon_spent
        assert r.rows_scanned == 100 * r.queries_released  # the catalog's rounding of 40 rows
        assert r.ciphertexts >= r.queries_released
    assert total == {"submitted": 3, "approved": 3, "released": 3, "cells": done["cells"], "eps": 0.5}

    # Quota of bob's grant: 3 queries a day on people; the 4th is RESOURCE_EXHAUSTED by name.
    with veil.connect(target, token=tokens["bob"], home=other_home) as bob:
        for _ in range(3):
            bob.query("SELECT COUNT(*) FROM people", purpose="research")
        with pytest.raises(veil.VeilError) as e:
            bob.query("SELECT COUNT(*) FROM people", purpose="research")
        assert e.value.code.name == "RESOURCE_EXHAUSTED" and e.value.reason == "QUOTA_EXCEEDED"
        assert "queries_per_day" in e.value.message

    # The admin sees everybody's use, through the CLI, in JSON and as a table.
    args = ["--target", target, f"--token={tokens['adam']}", "--since", start.isoformat()]  # a token may start with "-"
    assert cli_main(["usage", "report", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bob_rows = [r for r in report if r["principal"] == "bob"]
    assert sum(r["queries_submitted"] for r in bob_rows) == 3 and sum(r["queries_released"] for r in bob_rows) == 3
    assert cli_main(["usage", "report", *args]) == 0
    assert "cells_released" in capsys.readouterr().out
    assert cli_main(["budget", "show", "people_dp", "--target", target, f"--token={tokens['alice']}"]) == 0
    assert "2.5 left" in capsys.readouterr().out
