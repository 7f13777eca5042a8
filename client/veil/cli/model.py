"""``veil model fit``: a regression fitted inside the node (issue 18).

    veil model fit "affairs ~ age + yrs_married + C(religious)" --dataset fair --purpose research
    veil model fit "had_affair ~ age + C(rate_marriage)" --dataset fair --purpose research --family binomial
    veil model fit "..." --dataset fair --purpose research --epsilon 0.5 --json
    veil model list --dataset fair                            # owners: what was fitted on their data

Only encrypted aggregates leave the node (OLS: X'X, X'y, y'y, n; logistic: one gradient and
Hessian per Newton step); they are decrypted and solved here. ``--json`` prints the
coefficients, standard errors, confidence intervals, nobs and the releases' digests.
"""

from __future__ import annotations

import argparse

from .command import Commands
from .connection import connect
from .output import emit, table


def fit(args: argparse.Namespace) -> None:
    with connect(args) as node:
        res = node.fit(args.formula, dataset=args.dataset, purpose=args.purpose, family=args.family,
                       epsilon=args.epsilon)
    emit(args, res.to_dict(), res.summary())


def list_releases(args: argparse.Namespace) -> None:
    with connect(args) as node:
        items = node.model_releases(args.dataset or "")
    emit(args, items, table([{"time": r["time"], "principal": r["principal"], "dataset": r["dataset"],
                              "family": r["family"], "iteration": r["iteration"], "formula": r["formula"],
                              "epsilon": r["epsilon"]} for r in items]))


def register(cli: Commands) -> None:
    m = cli.noun("model", "regression fitted inside a node: only encrypted aggregates leave it")
    p = m.verb("fit", fit, "fit OLS (gaussian) or logistic (binomial) regression and print the results",
               connects=True, key_bits=True)
    p.add_argument("formula", help='e.g. "y ~ a + b + C(g)"; `- 1` drops the intercept')
    p.add_argument("--dataset", required=True, help="the dataset (see `veil dataset list`)")
    p.add_argument("--purpose", required=True, help="the declared purpose (see `veil dataset show NAME`)")
    p.add_argument("--family", choices=["gaussian", "binomial", "poisson"], default="gaussian",
                   help="gaussian: ordinary least squares; binomial: logistic; poisson: Poisson (log link)")
    p.add_argument("--epsilon", type=float, help="DP datasets: the ε each release spends (default: the dataset's)")
    p = m.verb("list", list_releases, "owners, admins, auditors: the models fitted on a dataset (who, what, when)",
               connects=True)
    p.add_argument("--dataset", help="the dataset (owners: required, one they own)")
