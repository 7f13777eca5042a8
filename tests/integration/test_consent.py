"""Consent as data the node enforces, on real nodes over real gRPC (DuckDB over a CSV file, and
PostgreSQL): results equal the same consent filter applied to the raw rows, for each purpose; a
withdrawal removes exactly that subject from later results; the consent snapshot digest in the
result and its receipt (the release's log entry) is the one recomputed from the consent table;
exact mode refuses a population counted again under another snapshot; an unreadable consent
source refuses the query."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb
import psycopg
import pytest

import veil
from tests.integration.consent_support import (
    PAST,
    Record,
    consent_records,
    digest_of,
    load_consent_pg,
    raw_reference,
    valid_subjects,
    write_consent_csv,
)
from tests.integration.engine_support import admin_conninfo, load_table, scratch_database, write_parquet
from veil_server.api.server import run_server
from veil_server.cli.demo import init_node_folder, patients_table
from veil_server.config import ConfigError, load_config

ROWS = 4_000
BY_SEX = "SELECT sex, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients WHERE region = '{region}' GROUP BY sex"
RAW_BY_SEX = "SELECT sex, COUNT(*), SUM(length_of_stay) FROM {{src}} WHERE region = '{region}' GROUP BY sex"
BY_REGION = "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients GROUP BY region"
RAW_BY_REGION = "SELECT region, COUNT(*), SUM(length_of_stay) FROM {src} GROUP BY region"


def consent_folder(folder: Path, *, consent_source: str = 'source = "data/consent.csv"',
                   data_line: str | None = None) -> tuple[dict[str, str], Path]:
    """A demo node folder (exact mode) whose dataset's basis is consent, purposes research and
    marketing, alice granted both."""
    tokens = init_node_folder(folder, rows=ROWS, disclosure="exact")
    config = folder / "veil.toml"
    text = config.read_text()
    old = 'purposes = ["research", "planning"]'
    assert text.count(old) == 1
    text = text.replace(old, 'purposes = ["research", "marketing"]\nbasis = "consent"\n'
                        f'consent = {{ {consent_source}, subject_column = "patient_id" }}')
    text = text.replace('purpose = "planning"', 'purpose = "marketing"')
    if data_line is not None:
        text = text.replace('source = "data/patients.csv"', data_line)
    config.write_text(text)
    return tokens, config


def rows_of(df, key: str) -> dict[tuple, tuple]:
    return {(r[key],): (int(r["n"]), int(r["stay"])) for _, r in df.iterrows() if not r["suppressed"]}


def check_receipt(node: veil.Node, df, query_id: str, expected: str) -> None:
    assert df.attrs["consent_snapshot"] == expected
    receipt = node.receipt(query_id)  # verified against the pinned node key
    assert receipt.consent_snapshot == expected


def run(node: veil.Node, sql: str, purpose: str):
    """(the decrypted result, the query's id)."""
    info = node.submit(sql, purpose=purpose)
    return node.wait(info.name), info.name


@pytest.mark.parametrize("purpose", ["research", "marketing"])
def test_each_purpose_sees_exactly_its_consented_rows(tmp_path, analyst_home, purpose):
    tokens, config = consent_folder(tmp_path / "node")
    records = consent_records(ROWS)
    write_consent_csv(records, tmp_path / "node" / "data" / "consent.csv")
    subjects = valid_subjects(records, purpose)
    other = "marketing" if purpose == "research" else "research"
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        df, qid = run(alice, BY_REGION, purpose)
        want = raw_reference(f"read_csv_auto('{tmp_path / 'node' / 'data' / 'patients.csv'}')", RAW_BY_REGION,
                             subjects)
        assert rows_of(df, "region") == want
        # the filter bites: all rows would give other figures
        assert sum(n for n, _ in want.values()) < ROWS
        check_receipt(alice, df, qid, digest_of(records, purpose, running.node, range(1, ROWS + 1)))
        # Exact mode: the same populations under the other purpose's consent set differ by the
        # subjects whose consent differs; released exactly, the pair would single them out.
        with pytest.raises(veil.QueryFailed) as e:
            alice.query(BY_REGION, purpose=other)
        assert e.value.reason == "EXACT_CONSENT_CHANGED"


def test_withdrawal_removes_exactly_that_subject(tmp_path, analyst_home):
    tokens, config = consent_folder(tmp_path / "node")
    data = tmp_path / "node" / "data"
    records = consent_records(ROWS)
    write_consent_csv(records, data / "consent.csv")
    raw = f"read_csv_auto('{data / 'patients.csv'}')"
    table = patients_table(ROWS).to_pylist()
    before = valid_subjects(records, "research")
    # a consenting subject in the South
    person = next(r for r in table if r["region"] == "South" and r["patient_id"] in before)
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        first = alice.query(BY_SEX.format(region="North"), purpose="research")
        assert rows_of(first, "sex") == raw_reference(raw, RAW_BY_SEX.format(region="North"), before)
        records.append(Record(person["patient_id"], "research", "withdrawn", PAST))
        write_consent_csv(records, data / "consent.csv")
        after = valid_subjects(records, "research")
        assert before - after == {person["patient_id"]}
        second, qid = run(alice, BY_SEX.format(region="South"), "research")
        got = rows_of(second, "sex")
        assert got == raw_reference(raw, RAW_BY_SEX.format(region="South"), after)
        old = raw_reference(raw, RAW_BY_SEX.format(region="South"), before)
        # exactly one row, the withdrawn subject's, is gone
        diff = {k: (old[k][0] - got[k][0], old[k][1] - got[k][1]) for k in old}
        assert diff == {**{k: (0, 0) for k in old}, (person["sex"],): (1, person["length_of_stay"])}
        check_receipt(alice, second, qid, digest_of(records, "research", running.node, range(1, ROWS + 1)))
        assert first.attrs["consent_snapshot"] != second.attrs["consent_snapshot"]
        # The first table again, now under the new snapshot: refused in exact mode.
        with pytest.raises(veil.QueryFailed) as e:
            alice.query(BY_SEX.format(region="North"), purpose="research")
        assert e.value.reason == "EXACT_CONSENT_CHANGED"


def test_dp_consent_counts_the_consented_rows_within_the_declared_noise(tmp_path, analyst_home):
    """Under DP (the default) the same filter applies; the noise covers differencing across
    consent changes, as the budget charges each release."""
    from veil.accuracy import Noise

    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=ROWS)  # DP
    config = folder / "veil.toml"
    old = 'purposes = ["research", "planning"]'
    text = config.read_text().replace(old, old + '\nbasis = "consent"\n'
                                      'consent = { source = "data/consent.csv", subject_column = "patient_id" }')
    config.write_text(text)
    records = consent_records(ROWS, other="planning")  # every record's purpose one the dataset declares
    write_consent_csv(records, folder / "data" / "consent.csv")
    consented = len(valid_subjects(records, "research") & set(range(1, ROWS + 1)))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        df, qid = run(alice, "SELECT COUNT(*) AS n FROM patients", "research")
        noise = df.attrs["noise"]["n"]
        bound = Noise(noise["count_scale"], terms=1).bound(1 - 1e-6)
        assert abs(int(df["n"][0]) - consented) <= bound < (ROWS - consented) / 2
        check_receipt(alice, df, qid, digest_of(records, "research", running.node, range(1, ROWS + 1)))


def test_a_missing_consent_source_refuses_every_query(tmp_path, analyst_home):
    tokens, config = consent_folder(tmp_path / "node")  # no consent.csv written
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        with pytest.raises(veil.QueryFailed) as e:
            alice.query(BY_REGION, purpose="research")
        assert e.value.reason == "CONSENT_SOURCE_UNAVAILABLE"


@pytest.mark.parametrize("bad, fix", [
    ({"basis": "consent"}, "needs [datasets.consent]"),
    ({"basis": "legitimate-interest"}, "basis must be one of"),
    ({"basis": "contract", "consent": {"source": "c.csv", "subject_column": "patient_id"}}, "only read for"),
    ({"basis": "consent", "consent": {"source": "c.csv", "subject_column": "nobody"}}, "subject_column"),
    ({"basis": "consent", "consent": {"source": "c.txt", "subject_column": "patient_id"}}, ".csv or .parquet"),
    ({"basis": "consent", "consent": {"source": "c.csv", "subject_column": "patient_id",
                                      "columns": {"who": "x"}}}, "may rename only"),
])
def test_consent_declarations_are_validated(tmp_path, bad, fix):
    import tomllib

    from veil_server.cli.demo import dataset_toml
    from veil_server.config import dataset_from_dict

    raw = tomllib.loads(dataset_toml("patients", "p.csv"))["datasets"][0]
    with pytest.raises(ConfigError, match=fix.replace("[", r"\[").replace(".", r"\.")):
        dataset_from_dict({**raw, **bad}, base_dir=tmp_path)


def test_an_unbound_consent_dataset_is_never_read_whole(tmp_path):
    """Deny by default: a consent dataset reaching an engine without its scope is refused."""
    import tomllib

    from veil_server.cli.demo import dataset_toml
    from veil_server.config import dataset_from_dict
    from veil_server.errors import Internal
    from veil_server.query.catalog import Catalog
    from veil_server.query.consent import now_scope
    from veil_server.query.engine import DuckDBEngine
    from veil_server.query.planner import plan_query

    records = consent_records(200)
    write_consent_csv(records, tmp_path / "consent.csv")
    write_parquet(patients_table(200), tmp_path / "p.parquet")
    raw = tomllib.loads(dataset_toml("patients", str(tmp_path / "p.parquet")))["datasets"][0]
    ds = dataset_from_dict({**raw, "basis": "consent", "consent": {"source": str(tmp_path / "consent.csv"),
                                                                   "subject_column": "patient_id"}})
    engine = DuckDBEngine([ds])
    plan = plan_query("SELECT COUNT(*) AS n FROM patients", Catalog([ds]))
    with pytest.raises(Internal) as e:
        engine.aggregate(plan, ds)
    assert e.value.reason == "CONSENT_NOT_APPLIED"
    bound = dataclasses.replace(ds, consent_scope=now_scope("research"))
    assert engine.aggregate(plan, bound).rows_matched == len(valid_subjects(records, "research") & set(range(1, 201)))


# -- PostgreSQL -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pg-consent")
    patients = patients_table(ROWS)
    for conninfo in scratch_database(admin_conninfo()):
        load_table(conninfo, "clinic.patients", patients)
        yield {"conninfo": conninfo, "parquet": write_parquet(patients, folder / "patients.parquet")}


def test_postgres_consent_per_purpose_and_withdrawal(pg, tmp_path, analyst_home):
    records = consent_records(ROWS)
    load_consent_pg(pg["conninfo"], "clinic.consent", records)
    tokens, config = consent_folder(
        tmp_path / "node", consent_source='source = "clinic.consent"',
        data_line=f'format = "postgres"\ntable = "clinic.patients"\nconninfo = "{pg["conninfo"]}"')
    raw = f"read_parquet('{pg['parquet']}')"
    table = patients_table(ROWS).to_pylist()
    before = valid_subjects(records, "research")
    person = next(r for r in table if r["region"] == "South" and r["patient_id"] in before)
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        first, qid = run(alice, BY_SEX.format(region="North"), "research")
        assert rows_of(first, "sex") == raw_reference(raw, RAW_BY_SEX.format(region="North"), before)
        check_receipt(alice, first, qid, digest_of(records, "research", running.node, range(1, ROWS + 1)))
        with psycopg.connect(pg["conninfo"], autocommit=True) as conn:
            conn.execute("UPDATE clinic.consent SET status = 'withdrawn' WHERE subject_id = %s AND purpose = %s",
                         (person["patient_id"], "research"))
        records = [dataclasses.replace(r, status="withdrawn")
                   if (r.subject, r.purpose) == (person["patient_id"], "research") else r for r in records]
        after = valid_subjects(records, "research")
        assert before - after == {person["patient_id"]}
        second, qid = run(alice, BY_SEX.format(region="South"), "research")
        got = rows_of(second, "sex")
        assert got == raw_reference(raw, RAW_BY_SEX.format(region="South"), after)
        old = raw_reference(raw, RAW_BY_SEX.format(region="South"), before)
        diff = {k: (old[k][0] - got[k][0], old[k][1] - got[k][1]) for k in old}
        assert diff == {**{k: (0, 0) for k in old}, (person["sex"],): (1, person["length_of_stay"])}
        check_receipt(alice, second, qid, digest_of(records, "research", running.node, range(1, ROWS + 1)))
        # marketing, on populations disjoint from the research releases? none here: refused
        with pytest.raises(veil.QueryFailed) as e:
            alice.query(BY_SEX.format(region="North"), purpose="marketing")
        assert e.value.reason == "EXACT_CONSENT_CHANGED"


# -- federated ------------------------------------------------------------------------------------

def test_a_federated_member_counts_only_its_consented_rows(tmp_path, analyst_home):
    from tests.integration.federation_cluster import federation

    old = 'purposes = ["research", "planning"]'
    new = ('purposes = ["research", "planning"]\nbasis = "consent"\n'
           'consent = { source = "data/consent.csv", subject_column = "patient_id" }')
    with federation(tmp_path, rows=(3000, 3000, 3000), edit={"south": (old, new)}) as c:
        records = consent_records(3000, other="planning")  # purposes the part declares
        write_consent_csv(records, c.members["south"].folder / "data" / "consent.csv")
        south = c.running["south"].node
        seen = []
        aggregate = south.engine.aggregate
        south.engine.aggregate = lambda plan, ds: (lambda r: (seen.append((ds, r)), r)[1])(aggregate(plan, ds))
        with c.connect("north", analyst_home) as node:
            df = node.federated_query("SELECT sex, COUNT(*) AS n FROM admissions GROUP BY sex", purpose="research")
        assert len(df) == 2
        # south's exact part, before its noise: the consented rows of its raw file only
        (ds, stats), = seen
        subjects = valid_subjects(records, "research")
        want = raw_reference(f"read_csv_auto('{c.members['south'].part}')",
                             "SELECT sex, COUNT(*), 0 FROM {src} GROUP BY sex", subjects)
        assert {g.keys: g.rows for g in stats.groups} == {k: v[0] for k, v in want.items()}
        assert sum(g.rows for g in stats.groups) < 3000
        # its log names the consent snapshot its part was computed under
        logged = [e.details.get("consent_snapshot") for e in c.entries("south", "query.execute")
                  if e.details.get("federation", {}).get("step") == "contribute"]
        south_ids = {r[0] for r in duckdb.connect().execute(
            f"SELECT patient_id FROM read_csv_auto('{c.members['south'].part}')").fetchall()}
        assert logged == [digest_of(records, "research", south, south_ids)]
        assert ds.consent_scope is not None and ds.consent_scope.snapshot == logged[0]
        # south's subject statements list the federated part for a consenting subject only
        from veil_server.config import Principal, Role
        from veil_server.governance.subject_statements import subject_code

        agent = Principal("dspace", Role.SUBJECT_AGENT, "")
        code = lambda s: subject_code(south.consent_key, "patients", str(s))  # noqa: E731
        first = min(subjects & south_ids)
        document, _ = south.subject_statement(agent, "patients", str(first), "", code(first))
        assert '"query":"fed:' in document.decode()
        never = next(i for i in range(1, 3000) if i not in subjects)
        document, _ = south.subject_statement(agent, "patients", str(never), "", code(never))
        assert '"releases":[]' in document.decode()


# -- subject statements ---------------------------------------------------------------------------

def add_agent(config: Path) -> str:
    """A subject_agent principal (a digital-space service) with a static token (dev mode)."""
    import hashlib
    import secrets

    token = secrets.token_urlsafe(32)
    config.write_text(config.read_text() + '\n[[principals]]\nname = "dspace"\nrole = "subject_agent"\n'
                      f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n')
    return token


def test_a_subject_statement_lists_exactly_the_releases_whose_snapshot_included_them(tmp_path, analyst_home):
    from veil.statements import StatementError, verify_statement
    from veil_server.governance.subject_statements import subject_code, subject_hash

    tokens, config = consent_folder(tmp_path / "node")
    agent = add_agent(config)
    data = tmp_path / "node" / "data"
    records = consent_records(ROWS)
    write_consent_csv(records, data / "consent.csv")
    before = valid_subjects(records, "research")
    table = patients_table(ROWS).to_pylist()
    person = next(r["patient_id"] for r in table if r["region"] == "South" and r["patient_id"] in before)
    stays = next(s for s in sorted(before) if s != person)
    never = next(i for i in range(1, ROWS) if i not in before and i not in valid_subjects(records, "marketing"))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            _, q1 = run(alice, BY_SEX.format(region="North"), "research")
            records.append(Record(person, "research", "withdrawn", PAST))
            write_consent_csv(records, data / "consent.csv")
            _, q2 = run(alice, BY_SEX.format(region="South"), "research")
            with pytest.raises(veil.PermissionDenied):  # analysts may not ask
                alice.audit.subject_statement("patients", str(stays), code="x")
        ids = [q.removeprefix("queries/") for q in (q1, q2)]
        with veil.connect(running.target, token=agent, home=analyst_home) as dspace:
            def code(subject) -> str:
                return subject_code(running.node.consent_key, "patients", str(subject))

            def listed(subject, **kw):
                return [r["query"] for r in dspace.audit.subject_statement("patients", str(subject), code=code(subject),
                                                                             **kw)["releases"]]

            assert listed(person) == ids[:1]  # withdrawn after the first release
            assert listed(stays) == ids
            assert listed(stays, purpose="marketing") == []
            assert listed(never) == []
            st = dspace.audit.subject_statement("patients", str(person), code=code(person))
            assert st["subject_id"] == str(person) and st["releases"][0]["consent_snapshot"] == \
                digest_of(records[:-1], "research", running.node, range(1, ROWS + 1))
            key = running.node.audit.key.public_key_bytes
            verify_statement(st["document"], st["signature"], key)
            with pytest.raises(StatementError):
                verify_statement(st["document"].replace(str(person).encode(), b"1"), st["signature"], key)
            # rate-limited per agent
            running.node.subjects.per_hour = 6
            with pytest.raises(veil.QuotaExceeded) as e:
                for _ in range(7):
                    listed(stays)
            assert e.value.reason == "SUBJECT_STATEMENT_RATE_LIMITED"
        # logged, with the subject hashed, never in clear
        entries = [e for e in running.node.audit.log.search(kind="admin.subject.statement").entries]
        assert entries and all(set(e.details) == {"purpose", "subject_hmac"} for e in entries)
        key = running.node.consent_key  # keyed: a reader of the log cannot test guesses of an id
        assert {e.details["subject_hmac"] for e in entries} >= {subject_hash(str(person), key),
                                                                subject_hash(str(stays), key)}


def test_a_statement_needs_the_subjects_code_and_limits_survive_a_restart(tmp_path, analyst_home):
    """F4 of the consent red team: an agent could read anyone's consent history, and the limit
    was per process. Now the agent must present the subject's statement code (from the owner's
    `veil node subject-code`); a wrong code is refused the same way for a subject that exists and
    one that does not; the limits are kept in the state database (a new ledger over the same
    store, as after a restart, still refuses) and hold for the whole node across agents."""
    import subprocess
    import sys

    from veil_server.governance.subject_statements import SubjectLedger, subject_code

    tokens, config = consent_folder(tmp_path / "node")
    agent = add_agent(config)
    records = consent_records(ROWS)
    write_consent_csv(records, tmp_path / "node" / "data" / "consent.csv")
    inside = min(valid_subjects(records, "research"))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        node = running.node
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            run(alice, BY_REGION, "research")
        with veil.connect(running.target, token=agent, home=analyst_home) as dspace:
            answers = []
            for subject in (inside, 10**9):  # a consenting subject; one that does not exist
                with pytest.raises(veil.PermissionDenied) as e:
                    dspace.audit.subject_statement("patients", str(subject), code="A" * 20)
                answers.append((e.value.reason, str(e.value)))
            assert answers[0] == answers[1] and answers[0][0] == "SUBJECT_CODE_INVALID"
            good = subject_code(node.consent_key, "patients", str(inside))
            with pytest.raises(veil.PermissionDenied):  # another subject's code
                dspace.audit.subject_statement("patients", str(inside + 1), code=good)
            assert len(dspace.audit.subject_statement("patients", str(inside), code=good)["releases"]) == 1
        # the operator's command prints the same code, from the node key in the state directory
        out = subprocess.run([sys.executable, "-m", "veil.cli", "node", "subject-code", "--config", str(config),
                              "--dataset", "patients", str(inside), "--json"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {str(inside): good}
        # limits in the state database: a fresh ledger (a restart) sees the asks already made
        ledger = SubjectLedger(node.store, per_hour=3, node_per_hour=10_000)
        for _ in range(3):
            ledger.admit("agent-a")
        with pytest.raises(Exception) as e:
            SubjectLedger(node.store, per_hour=3, node_per_hour=10_000).admit("agent-a")
        assert getattr(e.value, "reason", "") == "SUBJECT_STATEMENT_RATE_LIMITED"
        # ... and node-wide: another agent gets what is left of the node's hour, not its own 100
        with node.store.reading() as db:
            so_far = db.execute("SELECT COUNT(*) FROM subject_statement_requests").fetchone()[0]
        wide = SubjectLedger(node.store, per_hour=100, node_per_hour=so_far + 2)
        assert sum(1 for _ in range(10) if _admitted(wide, "agent-b")) == 2


def _admitted(ledger, agent: str) -> bool:
    try:
        ledger.admit(agent)
        return True
    except Exception:  # noqa: BLE001 - SUBJECT_STATEMENT_RATE_LIMITED
        return False


def test_a_subject_agent_may_call_nothing_else(tmp_path):
    """Deny by default for the new role: every RPC not granted to subject_agent is refused."""
    import grpc

    from tests.security.conftest import bearer, raw_stream, raw_unary
    from veil_server.access.auth import METHOD_ROLES, PEER_SIGNED
    from veil_server.config import Role

    _, config = consent_folder(tmp_path / "node")
    agent = add_agent(config)
    refused = 0
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            grpc.insecure_channel(running.target) as ch:
        for method, allowed in sorted(METHOD_ROLES.items()):
            if allowed is PEER_SIGNED or Role.SUBJECT_AGENT in allowed:
                continue
            call = raw_stream(ch, method) if method.endswith("ExportAuditLog") else raw_unary(ch, method)
            with pytest.raises(grpc.RpcError) as e:
                out = call(b"", metadata=bearer(agent), timeout=10)
                list(out) if method.endswith("ExportAuditLog") else out
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
            refused += 1
    assert refused >= 30
    assert {m for m, roles in METHOD_ROLES.items() if roles is not PEER_SIGNED and Role.SUBJECT_AGENT in roles} == {
        "/veil.v1.AuditService/GetSubjectStatement", "/veil.v1.CatalogService/ListDatasets",
        "/veil.v1.CatalogService/GetDataset", "/veil.v1.GovernanceService/GetCertificate",
        "/veil.v1.AuditService/GetNodeKey", "/veil.v1.FederationService/ListFederatedDatasets"}


def test_an_owner_registers_a_consent_version_over_grpc(tmp_path, analyst_home):
    """The basis and consent source travel in DatasetSpec; the certificate states the basis; the
    listed version's queries count consented rows only."""
    import tomllib

    from veil.accuracy import Noise
    from veil_server.cli.demo import dataset_toml

    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=ROWS, disclosure="exact")
    records = consent_records(ROWS, other="planning")  # the demo dataset's purposes
    write_consent_csv(records, folder / "data" / "consent.csv")
    spec = tomllib.loads(dataset_toml("patients", str(folder / "data" / "patients.csv"), disclosure="exact"))
    spec = spec["datasets"][0]
    spec.update(classification="internal", rights=["holding", "processing"], auto_approve=True, basis="consent",
                consent={"source": str(folder / "data" / "consent.csv"), "subject_column": "patient_id"})
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=1.0) as running:
        def who(name):
            return veil.connect(running.target, token=tokens[name], home=analyst_home)

        with who("olivia") as olivia:
            v = olivia.governance.register(spec)
            assert v.basis == "consent"
            olivia.governance.submit("patients")
        with who("rita") as rita:
            rita.governance.approve_listing("patients", "consent source reviewed")
            cert, _ = rita.governance.certificate("patients")
        assert cert.version == 2 and cert.basis == "consent"
        with who("alice") as alice:
            assert alice.dataset("patients").basis == "consent"
            # a version registered over gRPC releases with DP (its spec names no exact reason)
            df, qid = run(alice, "SELECT COUNT(*) AS n FROM patients", "research")
            assert df.attrs["disclosure"] == "dp"
            consented = len(valid_subjects(records, "research") & set(range(1, ROWS + 1)))
            bound = Noise(df.attrs["noise"]["n"]["count_scale"], terms=1).bound(1 - 1e-6)
            assert abs(int(df["n"][0]) - consented) <= bound < (ROWS - consented) / 2
            check_receipt(alice, df, qid, digest_of(records, "research", running.node, range(1, ROWS + 1)))


def test_recover_rebuilds_each_exact_populations_consent_snapshot(tmp_path, analyst_home):
    """`veil node recover` takes the snapshot from the logged release: the same table under the
    same consent state is answered again; without the snapshot (control) it would be refused."""
    from tests.integration.state_damage import SQLS, NodeFiles
    from tests.integration.test_recover import _ask, _delete_state, recover
    from veil_server.node import Node
    from veil_server.state.lifecycle import QueryState

    _, config = consent_folder(tmp_path / "node")
    write_consent_csv(consent_records(ROWS), tmp_path / "node" / "data" / "consent.csv")
    files = NodeFiles(tmp_path / "node", analyst_home)
    files.run(1)  # SQLS[0], released under the research snapshot
    _delete_state(files)
    out = recover(files.config)
    assert out.returncode == 0, out.stderr
    assert _ask(files.config, SQLS[0], files.pk)[0] is QueryState.SUCCEEDED  # same snapshot: same populations
    node = Node(files.config)  # the control: the rebuilt populations without their snapshot
    try:
        with node.store.joined_tx() as db:
            db.execute("DELETE FROM exact_consent_snapshots")
        node.disclosure.history.forget("patients")
        alice = next(p for p in files.config.principals if p.name == "alice")
        sub = node.submit(alice, sql=SQLS[0], purpose="research", public_key=files.pk.to_bytes(),
                          request_id="control")
        assert node.wait(alice, sub.query.id, 60).state_reason == "EXACT_CONSENT_CHANGED"
    finally:
        node.close()


def test_models_fit_only_the_consented_rows_and_carry_the_snapshot(tmp_path, analyst_home):
    """A model on a consent dataset is fitted on the rows of subjects with a valid consent for its
    purpose (equal to statsmodels on exactly those raw rows), each release carries the consent
    snapshot (result, log entry), a consenting subject's statement lists it and a subject without
    consent's does not; after a withdrawal the same model, exact, is refused as differencing."""
    import json

    import statsmodels.formula.api as smf

    from veil_server.config import load_config as load

    tokens, config = consent_folder(tmp_path / "node")
    data = tmp_path / "node" / "data"
    records = consent_records(ROWS)
    write_consent_csv(records, data / "consent.csv")
    table = patients_table(ROWS).to_pandas()
    subjects = valid_subjects(records, "research")
    formula = "length_of_stay ~ age"
    with run_server(load(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        res = alice.fit(formula, dataset="patients", purpose="research")
        consented = table[table["patient_id"].isin(subjects)]
        ref = smf.ols(formula, consented).fit()
        assert res.nobs == len(consented) < ROWS
        for name in ref.params.index:
            assert res.params[name] == pytest.approx(ref.params[name], rel=1e-6)
            assert res.bse[name] == pytest.approx(ref.bse[name], rel=1e-6)
        assert res.consent_snapshots == [digest_of(records, "research", running.node, range(1, ROWS + 1))]
        entry = running.node.audit.log.search(kind="model.release", page_size=10).entries[-1]
        assert entry.details["consent_snapshot"] == digest_of(records, "research", running.node, range(1, ROWS + 1))
        # The subjects' statements (a consenting subject, one without consent for research).
        release = entry.details["release"]
        inside = int(consented["patient_id"].iloc[0])
        outside = next(r.subject for r in records if r.subject not in subjects)
        def listed(subject) -> list[str]:
            doc, _sig = running.node.subjects.statement(dataset="patients", consent_dataset=True, subject=str(subject),
                                                        purpose="", node_id="n", key=running.node.audit.key)
            return [r["query"] for r in json.loads(doc)["releases"]]

        assert release in listed(inside)
        assert release not in listed(outside)
        # A withdrawal, then the same model again: another snapshot over the same population.
        records.append(Record(inside, "research", "withdrawn", PAST))
        write_consent_csv(records, data / "consent.csv")
        with pytest.raises(veil.VeilError) as e:
            alice.fit(formula, dataset="patients", purpose="research")
        assert e.value.reason == "EXACT_CONSENT_CHANGED"
