"""``veil model fit``: a regression fitted inside the node (issue 18).

    veil model fit "affairs ~ age + yrs_married + C(religious)" --dataset fair --purpose research
    veil model fit "had_affair ~ age + C(rate_marriage)" --dataset fair --purpose research --family binomial
    veil model fit "..." --dataset fair --purpose research --epsilon 0.5 --json
    veil model list --dataset fair                            # owners: what was fitted on their data
    veil model reviews [--dataset fair] [--state all]         # owners: models waiting for a decision
    veil model approve REVIEW [--reason TEXT]                 # owners: approve one
    veil model reject REVIEW --reason TEXT                    # owners: reject one (the analyst is told)

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


def list_reviews(args: argparse.Namespace) -> None:
    with connect(args) as node:
        items = node.model_reviews(args.dataset or "", state=args.state)
    emit(args, items, table([{"review": r["name"].removeprefix("modelReviews/"), "state": r["state"],
                              "principal": r["principal"], "dataset": r["dataset"], "purpose": r["purpose"],
                              "family": r["family"], "formula": r["formula"],
                              "approvals": f"{len(r['approved_by'])}/{r['approvals_required']}"} for r in items]))


def decide(args: argparse.Namespace) -> None:
    with connect(args) as node:
        if args.verb == "approve":
            out = node.approve_model(args.review, reason=args.reason or "")
        else:
            out = node.reject_model(args.review, reason=args.reason)
    emit(args, out, f"{out['name']}: {out['state']} ({len(out['approved_by'])}/{out['approvals_required']} "
                    "approvals)")


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
    p = m.verb("reviews", list_reviews, "owners: the models waiting for your decision (who, formula, purpose)",
               connects=True)
    p.add_argument("--dataset", help="only this dataset (default: every dataset you own)")
    p.add_argument("--state", choices=["pending", "approved", "rejected", "all"], default="pending")
    p = m.verb("approve", decide, "owners: approve a model review (the analyst may then fit it)", connects=True)
    p.add_argument("review", help="the review id (from `veil model reviews` or the analyst's refusal)")
    p.add_argument("--reason", help="recorded in the audit log")
    p.set_defaults(verb="approve")
    p = m.verb("reject", decide, "owners: reject a model review; the analyst is told the reason", connects=True)
    p.add_argument("review", help="the review id")
    p.add_argument("--reason", required=True, help="why (the analyst sees it)")
    p.set_defaults(verb="reject")
