"""Models (issue 18) on a PostgreSQL dataset: the design's aggregates are pushed down into a real
PostgreSQL server, and the fits equal statsmodels' on the raw rows within 1e-6 relative."""

from __future__ import annotations

import pytest
import statsmodels.formula.api as smf

import veil
from tests.integration.engine_support import admin_conninfo, scratch_database
from tests.integration.model_support import survey_node
from tests.integration.test_models import LOGIT_FORMULA, OLS_FORMULA


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    for conninfo in scratch_database(admin_conninfo()):
        with survey_node(tmp_path_factory.mktemp("models-pg"), postgres=conninfo) as s:
            yield s


@pytest.mark.parametrize("formula,family", [(OLS_FORMULA, "gaussian"), (LOGIT_FORMULA, "binomial")])
def test_postgres_fit_equals_statsmodels(served, analyst_home, formula, family):
    running, token, raw = served
    with veil.connect(running.target, token=token, home=analyst_home) as node:
        ours = node.fit(formula, dataset="fair_pg", purpose="research", family=family)
        duck = node.fit(formula, dataset="fair", purpose="research", family=family)
    ref = (smf.ols(formula, raw).fit() if family == "gaussian"
           else smf.logit(formula, raw).fit(disp=0, tol=1e-12, maxiter=100))
    assert list(ours.params.index) == list(ref.params.index)
    for name in ref.params.index:
        assert ours.params[name] == pytest.approx(ref.params[name], rel=1e-6)
        assert ours.bse[name] == pytest.approx(ref.bse[name], rel=1e-6)
        assert ours.params[name] == pytest.approx(duck.params[name], rel=1e-9)  # same rows, same sums
    assert ours.nobs == len(raw)
