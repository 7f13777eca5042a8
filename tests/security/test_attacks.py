"""Attacks on disclosure control, each run with DP off (dataset ``people``: differencing
defence) and on (``people_dp``), through real gRPC. Each test states what is refused and why.

- differencing pair: SUM(secret) over dept D, then over dept D without the planted person;
- tracker: q(C ∨ T) + q(C ∨ ¬T) − q(all) isolates C = the planted person (T = age < 45);
- reconstruction: many random-subset sums of the secret bit, decoded by least squares.
"""

from __future__ import annotations

import secrets

import numpy as np
import pytest

import veil
from veil_server.config import load_config
from veil_server.disclosure import dp
from veil_server.api.server import run_server

from .disclosure_support import K, PLANTED_PID, ROWS, people_rows, write_node

PLANTED = next(r for r in people_rows() if r["pid"] == PLANTED_PID)
SECRETS = np.array([r["secret"] for r in sorted(people_rows(), key=lambda r: r["pid"])], dtype=float)


@pytest.fixture()
def node(tmp_path, analyst_home):
    tokens = write_node(tmp_path)
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            yield alice


def ask(node, sql):
    """The released value, or the refusal reason."""
    try:
        df = node.query(sql, purpose="research")
    except veil.QueryFailed as e:
        return e.reason
    except veil.VeilError as e:
        return e.reason
    return None if df["suppressed"][0] else float(df.iloc[0, 0])


def test_differencing_pair_is_refused_without_dp(node):
    whole = ask(node, "SELECT SUM(secret) FROM people WHERE dept = 'D'")
    assert isinstance(whole, float)  # 8 people: released
    minus_one = ask(node, "SELECT SUM(secret) FROM people WHERE dept = 'D' AND age <> 77")
    assert minus_one == "DIFFERENCING_RISK"  # |A Δ B| = 1 < k: refused, nothing released
    # Same population asked twice is not differencing.
    assert ask(node, "SELECT SUM(secret) FROM people WHERE dept = 'D'") == whole


def test_differencing_pair_with_dp_is_noise(node):
    # With DP both are released, each with discrete Laplace noise: the difference of two noisy
    # sums says (almost) nothing about one bit. Measured on the mechanism itself, many trials:
    a = ask(node, "SELECT SUM(secret) FROM people_dp WHERE dept = 'D'")
    b = ask(node, "SELECT SUM(secret) FROM people_dp WHERE dept = 'D' AND age <> 77")
    assert a != "DIFFERENCING_RISK" and b != "DIFFERENCING_RISK"  # DP answers (noisy) instead of refusing
    scale = 1 * 2 / 0.5  # sensitivity 1, 2 statistics (rows, sum), ε 0.5
    hits = 0
    trials = 400
    for _ in range(trials):
        bit = secrets.randbelow(2)
        base = 3
        guess = (dp.discrete_laplace(base + bit, scale) - dp.discrete_laplace(base, scale)) >= 0.5
        hits += guess == bit
    assert hits / trials < 0.62  # a coin flip does 0.5; the exact answer would give 1.0
    # And the budget stops the repetition that would average the noise away.
    for _ in range(8):
        ask(node, "SELECT SUM(secret) FROM people_dp WHERE dept = 'D'")
    assert ask(node, "SELECT SUM(secret) FROM people_dp WHERE dept = 'D'") == "PRIVACY_BUDGET_EXHAUSTED"
    assert node.budget("people_dp").remaining < 0.5


TRACKER = ["SELECT COUNT(*) FROM {t} WHERE (dept = 'D' AND age = 77) OR age < 45",
           "SELECT COUNT(*) FROM {t} WHERE (dept = 'D' AND age = 77) OR age >= 45",
           "SELECT COUNT(*) FROM {t}"]


def test_tracker_is_refused_without_dp(node):
    answers = [ask(node, q.format(t="people")) for q in TRACKER]
    # The first is released; the second makes C (one person) a boolean combination of two
    # released filters: refused as DIFFERENCING_RISK before the third can complete the sum.
    assert isinstance(answers[0], float)
    assert answers[1] == "DIFFERENCING_RISK"
    refusal = node.get(node.queries(limit=5)[1].name)
    assert refusal.state_reason == "DIFFERENCING_RISK" and "fewer than" in refusal.state_message


def test_tracker_is_refused_by_the_linear_audit(tmp_path, analyst_home):
    """With the filter-atom rule off and the linear audit on, the third tracker query is the one
    refused: q1 + q2 - q3 would compute the one-person population exactly."""
    tokens = write_node(tmp_path, differencing="differencing = { strict = false, linear = true }")
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            answers = [ask(alice, q.format(t="people")) for q in TRACKER]
    assert isinstance(answers[0], float) and isinstance(answers[1], float)
    assert answers[2] == "DIFFERENCING_RISK"


def test_tracker_with_dp_gives_noise(node):
    answers = [ask(node, q.format(t="people_dp")) for q in TRACKER]
    assert all(isinstance(a, float) for a in answers)
    estimate = answers[0] + answers[1] - answers[2]
    # The truth is 1; three noisy counts (scale 2 each, ε 0.5) blur it: what is released is
    # consistent with the person being absent as well (checked on the mechanism below).
    assert np.isfinite(estimate)
    present = [dp.discrete_laplace(1, 2.0) + dp.discrete_laplace(0, 2.0) - dp.discrete_laplace(0, 2.0)
               for _ in range(300)]
    absent = [dp.discrete_laplace(0, 2.0) * 1 + dp.discrete_laplace(0, 2.0) - dp.discrete_laplace(0, 2.0)
              for _ in range(300)]
    acc = (np.mean(np.array(present) >= 0.5) + np.mean(np.array(absent) < 0.5)) / 2
    assert acc < 0.65


def reconstruction(node, table: str, queries: int, seed: int) -> tuple[float, int, int, int]:
    """Random-subset sums of the secret, least-squares decoded. Returns (accuracy, released,
    suppressed, refused): under DP a noisy count can fall below k, and that answer is suppressed
    (its ε is spent all the same) rather than refused."""
    gen = np.random.Generator(np.random.PCG64(seed))  # picks subsets (the attacker's choice, not noise)
    a_rows, b = [], []
    refused = suppressed = 0
    for _ in range(queries):
        subset = sorted(int(x) for x in gen.choice(np.arange(1, ROWS + 1), size=ROWS // 2, replace=False))
        ans = ask(node, f"SELECT SUM(secret) FROM {table} WHERE pid IN ({', '.join(map(str, subset))})")
        if ans is None:
            suppressed += 1
            continue
        if not isinstance(ans, float):
            refused += 1
            continue
        row = np.zeros(ROWS)
        row[[p - 1 for p in subset]] = 1
        a_rows.append(row)
        b.append(ans)
    if not a_rows:
        guess = np.full(ROWS, float(SECRETS.mean() >= 0.5))
    else:
        x, *_ = np.linalg.lstsq(np.array(a_rows), np.array(b), rcond=None)
        guess = (x >= 0.5).astype(float)
    return float((guess == SECRETS).mean()), len(b), suppressed, refused


def test_reconstruction_recovers_no_more_than_baseline(node):
    baseline = max(SECRETS.mean(), 1 - SECRETS.mean())  # guess the majority bit for everybody
    acc_off, released_off, suppressed_off, refused_off = reconstruction(node, "people", 30, seed=1)
    # Without DP: random halves of 40 rows cut the table into filter combinations of < k rows
    # after a couple of queries; the rest are refused (DIFFERENCING_RISK).
    assert refused_off >= 25 and released_off <= 5 and suppressed_off == 0  # 20-row subsets: never < k
    assert acc_off <= baseline + 0.1
    acc_on, released_on, suppressed_on, refused_on = reconstruction(node, "people_dp", 30, seed=2)
    # With DP: the budget (3.0 at 0.5 each) allows 6 noisy answers; the rest are refused. Now and
    # then noise pushes a count below k and that answer is suppressed: it still spends its ε.
    assert released_on + suppressed_on == 6 and refused_on == 24
    # Six subset sums of 40 secrets decode to 0.6 at best even when exact; the noise is random
    # and now and then lucky (+0.15 over baseline in ~0.5% of draws, simulated; +0.2 in < 0.01%),
    # so the bound leaves room for luck without ever allowing a real reconstruction (~1.0).
    assert acc_on <= baseline + 0.2


def test_dominance_suppresses_a_dominated_sum(tmp_path, analyst_home):
    tokens = write_node(tmp_path)
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            df = alice.query("SELECT dept, SUM(salary) FROM people GROUP BY dept", purpose="research")
    # n = 1, 60 %: no department is dominated by one salary in this table; all with >= k released.
    assert not df["suppressed"].all()
