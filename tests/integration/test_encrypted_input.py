"""Encrypted-input queries through real gRPC: per group Enc(sum w * x) equals the same weighted
sum computed on the raw file, the node stores only ciphertexts of the weights, and the policy
bounds what the weights can extract (k rule per (group, category) cell)."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest

import veil

WEIGHTS = {"cardio": Decimal("2.5"), "renal": Decimal("-1.25"), "oncology": Decimal("0.333333"),
           "maternity": Decimal("7")}


def raw(demo_node, sql):
    return duckdb.connect().execute(sql.format(t=f"read_csv_auto('{demo_node.csv}')")).fetchall()


def test_weighted_sum_by_category_equals_raw(alice, demo_node):
    ds = alice.dataset("patients")
    cost = veil.WeightedSum.by_category(ds, "diagnosis", WEIGHTS, value_column="cost", name="w_cost")
    count = veil.WeightedSum.by_category(ds, "diagnosis", WEIGHTS, name="w_count")
    df = alice.query("SELECT region, COUNT(*) AS n FROM patients WHERE age >= 20 GROUP BY region",
                     purpose="research", weighted_sums=[cost, count], exact=True)
    cells = raw(demo_node, "SELECT region, diagnosis, COUNT(*), SUM(CAST(ROUND(cost * 100) AS BIGINT)) FROM {t} "
                           "WHERE age >= 20 GROUP BY region, diagnosis")
    expect_cost: dict[str, Decimal] = {}
    expect_count: dict[str, Decimal] = {}
    for region, diagnosis, n, cents in cells:
        w = WEIGHTS.get(diagnosis, Decimal(0))
        if n >= 10:  # cells below k contribute nothing
            expect_cost[region] = expect_cost.get(region, Decimal(0)) + w * Decimal(cents) / 100
            expect_count[region] = expect_count.get(region, Decimal(0)) + w * n
    assert len(df) == 8
    for row in df.itertuples():
        assert row.w_cost == expect_cost[row.region]  # exact: fixed point end to end
        assert row.w_count == expect_count[row.region]


def test_private_linear_score_equals_raw(alice, demo_node):
    score = veil.WeightedSum.score({"age": Decimal("0.5"), "length_of_stay": Decimal("-2"), "cost": Decimal("0.001")},
                                   name="score")
    df = alice.query("SELECT sex, COUNT(*) FROM patients GROUP BY sex", purpose="research",
                     weighted_sums=[score], exact=True)
    ref = {sex: Decimal(a) * Decimal("0.5") - 2 * Decimal(s) + Decimal(c) / 100 * Decimal("0.001")
           for sex, a, s, c in raw(demo_node, "SELECT sex, SUM(age), SUM(length_of_stay), "
                                              "SUM(CAST(ROUND(cost * 100) AS BIGINT)) FROM {t} GROUP BY sex")}
    for row in df.itertuples():
        assert row.score == ref[row.sex]


def test_weights_never_stored_in_clear(alice, demo_node):
    ds = alice.dataset("patients")
    marker = Decimal("123456.654321")
    ws = veil.WeightedSum.by_category(ds, "diagnosis", {"neuro": marker})
    info = alice.submit("SELECT COUNT(*) FROM patients", purpose="research", weighted_sums=[ws])
    alice.wait(info.name)
    state = demo_node.running.node.config.state_dir
    encoded = str(int(marker * 10**6)).encode()
    for path in state.iterdir():
        if path.name.startswith("state.db"):
            assert encoded not in path.read_bytes()


@pytest.mark.parametrize("build,reason", [
    (lambda ds: veil.WeightedSum.by_category(ds, "diagnosis", {"renal": 1}, value_column="cost"), None),
    (lambda ds: veil.WeightedSum((1,), "postcode", (), 0, "x"), "WEIGHT_KEY_NOT_ALLOWED"),
    (lambda ds: veil.WeightedSum((1,), "", ("region",), 0, "x"), "AGGREGATE_NOT_ALLOWED"),
    (lambda ds: veil.WeightedSum((1, 2), "", ("cost",), 0, "x"), "WEIGHT_COUNT_MISMATCH"),
    (lambda ds: veil.WeightedSum((1,), "", ("cost",), 20, "x"), "INVALID_WEIGHT_SCALE"),
])
def test_policy_on_encrypted_inputs(alice, build, reason):
    ds = alice.dataset("patients")
    sql = "SELECT region, sex, FLOOR(age / 5) * 5 AS a, COUNT(*) FROM patients GROUP BY region, sex, a"
    assert not alice.query(sql, purpose="research").empty  # 368 groups: allowed in plaintext
    if reason is None:  # x 10 diagnoses = 3680 (group, category) cells > max_groups: refused
        with pytest.raises(veil.PermissionDenied) as e:
            alice.submit(sql, purpose="research", weighted_sums=[build(ds)])
        assert e.value.reason == "TOO_MANY_GROUPS"
        return
    with pytest.raises(veil.VeilError) as e:
        alice.submit("SELECT COUNT(*) FROM patients", purpose="research", weighted_sums=[build(ds)])
    assert e.value.reason == reason


def test_forged_weight_ciphertext_is_refused(alice):
    from veil.v1 import query_pb2

    pk = alice.keys[0]
    bad = query_pb2.WeightedSum(name="x", value_columns=["cost"], weights=[b"\x00" * pk.ciphertext_size])
    req = query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", purpose="research", request_id="forged",
                                       public_key=query_pb2.PaillierPublicKey(n=pk.to_bytes()), weighted_sums=[bad])
    with pytest.raises(veil.InvalidQuery) as e:
        alice._call(alice._queries.SubmitQuery, req)
    assert e.value.reason == "INVALID_CIPHERTEXT"
