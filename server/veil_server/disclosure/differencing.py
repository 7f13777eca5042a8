"""The differencing defence (datasets without DP): an audit of what one analyst has received.

What the analyst knows: for each released cell (a population = the query's WHERE ∧ the group's
keys), an aggregate over exactly that population. We keep, per analyst × dataset, the last
``history`` released queries (plan + which groups were released) and, before a new release B,
re-evaluate every kept filter and B's on the table in one DuckDB scan: rows with the same
membership in every released cell form an *atom*; we get each atom's exact size.

B is refused (``DIFFERENCING_RISK``, nothing released, nothing charged) when:

1. **pairwise**: a cell (or the union of released cells) of B differs from a cell (or union)
   of an earlier release by 0 < |P Δ Q| < k rows: subtracting one from the other would single
   out fewer than k rows (the classic differencing pair and Schlörer's individual tracker;
   also a suppressed group recovered as total − released groups, since the union is checked);
2. **exact disclosure** (opt-in, ``differencing = { linear = true }``): some atom with 0 < size < k lies in the row space of the released
   populations (e_j = Σ c_i · P_i): a linear combination of released answers isolates it
   (general trackers such as q(C∨T) + q(C∨¬T) − q(all); a suppressed cell recovered as a
   marginal minus the released cells of a finer cross-tab). Off by default: it refuses common
   sequences of cross-tabulations whose suppressed cells a marginal would reveal, which the
   existing k-suppression alone lets through; owners of sensitive data should turn it on.
3. **filter atoms** (on by default; ``differencing = { strict = false }`` turns it off): the
   WHERE clauses released so far (and B's) intersect in 0 < n < k rows, i.e. some boolean
   combination of released filters selects fewer than k rows. This stops reconstruction by
   many overlapping subset queries (a least-squares decoder needs small atoms) and trackers
   built from allowed filters, at the price of refusing filters that overlap only slightly.
   Group cells are not part of this rule (cross-tabulations of large groups stay allowed);
   rules 1 and 2 cover them.

Equal populations (|P Δ Q| = 0: a repeated query) are allowed. Only the last ``history``
releases are audited (a bounded cost: one scan of the table per release); attacks spread over
more releases than that are out of reach of this audit, which is why DP is the stronger
defence. Only DuckDB-backed datasets (CSV, Parquet) are audited; others skip it (logged).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from ..query.catalog import Dataset
from ..query.engine import DuckDBEngine, SqlRenderer, key_string
from ..errors import PolicyViolation
from ..query.plan import QueryPlan
from ..state.store import StateStore, now_us

log = logging.getLogger("veil.disclosure")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS released_populations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    principal TEXT NOT NULL,
    dataset TEXT NOT NULL,
    query_id TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    released_keys TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    certificate TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS released_by_account ON released_populations (principal, dataset, seq)
"""

EXACT = 1 - 1e-6  # projection of e_j on the row space: 1 means exactly derivable
MAX_POPULATIONS = 3000  # bound the audit's linear algebra; the oldest releases drop out first


class DifferencingRisk(PolicyViolation):
    default_reason = "DIFFERENCING_RISK"


@dataclass(frozen=True)
class Release:
    plan: QueryPlan
    keys: list[tuple[str, ...]]  # released group keys (() for an ungrouped query)
    certificate: str = ""  # the dataset certificate (data version) it was computed on

    def repeats(self, earlier: "Release") -> bool:
        """Same filter, same grouping, no new cell, same data: every population it releases was
        released before with exactly the same figures, so it teaches nothing new."""
        return (bool(self.certificate) and self.certificate == earlier.certificate
                and self.plan.where == earlier.plan.where
                and [(g.column, g.bin_width) for g in self.plan.group_keys]
                == [(g.column, g.bin_width) for g in earlier.plan.group_keys]
                and set(self.keys) <= set(earlier.keys))


class ReleaseHistory:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def recent(self, principal: str, dataset: str, limit: int) -> list[Release]:
        with self.store.reading() as db:
            rows = db.execute("SELECT plan_json, released_keys, certificate FROM released_populations WHERE "
                              "principal=? AND dataset=? ORDER BY seq DESC LIMIT ?",
                              (principal, dataset.lower(), limit)).fetchall()
        return [Release(QueryPlan.from_json(p), [tuple(k) for k in json.loads(ks)], c) for p, ks, c in rows]

    def add(self, query_id: str, principal: str, dataset: str, plan: QueryPlan, keys: list[tuple[str, ...]],
            certificate: str = "") -> None:
        """In the release transaction. A release that only repeats a remembered one is not stored
        again, so repeated dashboards do not push informative releases out of the window."""
        new = Release(plan, keys, certificate)
        if any(new.repeats(h) for h in self.recent(principal, dataset, 24)):
            return
        with self.store.joined_tx() as db:
            db.execute("INSERT INTO released_populations (principal, dataset, query_id, plan_json, released_keys, "
                       "at_us, certificate) VALUES (?,?,?,?,?,?,?)",
                       (principal, dataset.lower(), query_id, plan.to_json(), json.dumps([list(k) for k in keys]),
                        now_us(), certificate))


def atoms(engine: DuckDBEngine, ds: Dataset, releases: list[Release]) -> tuple[np.ndarray, list[list[int | None]]]:
    """Atom sizes and, per atom, the index of the released cell it falls in for each release."""
    r = SqlRenderer(ds, engine._view(ds))
    inner, outer, layout = [], [], []
    for i, rel in enumerate(releases):
        cond = r.filter(rel.plan.where) if rel.plan.where is not None else "TRUE"
        inner.append(f"COALESCE({cond}, FALSE) AS in{i}")
        outer.append(f"in{i}")
        for j, g in enumerate(rel.plan.group_keys):
            inner.append(f"{r.group_expr(g.column, g.bin_width)} AS k{i}_{j}")
            outer.append(f"CASE WHEN in{i} THEN k{i}_{j} END")
        layout.append(len(rel.plan.group_keys))
    sql = (f"SELECT {', '.join(outer)}, COUNT(*) FROM (SELECT {', '.join(inner)} FROM {engine._view(ds)}) AS t "
           f"GROUP BY ALL")
    rows = engine._cursor().execute(sql, r.params).fetchall()
    index = [{k: n for n, k in enumerate(rel.keys)} for rel in releases]
    merged: Counter = Counter()
    filters: Counter = Counter()
    for row in rows:
        pos, sig = 0, []
        for i, rel in enumerate(releases):
            inside = bool(row[pos])
            raw = row[pos + 1 : pos + 1 + layout[i]]
            pos += 1 + layout[i]
            cell = None
            if inside and all(v is not None for v in raw):
                keys = tuple(key_string(v) if g.bin_width is None else key_string(Decimal(int(v)) * g.bin_width)
                             for g, v in zip(rel.plan.group_keys, raw))
                cell = index[i].get(keys)
            sig.append(cell)
        if any(c is not None for c in sig):
            merged[tuple(sig)] += int(row[-1])
        inside = tuple(bool(row[p]) for p in np.cumsum([0] + [1 + n for n in layout[:-1]]))
        if any(inside):
            filters[inside] += int(row[-1])
    sigs = list(merged)
    return (np.array([merged[s] for s in sigs], dtype=float), [list(s) for s in sigs],
            np.array(list(filters.values()), dtype=float))


def _populations(sigs: list[list[int | None]], i: int, ncells: int) -> np.ndarray:
    """Rows: each released cell of release i, then their union (if more than one cell)."""
    m = np.zeros((ncells + (ncells > 1), len(sigs)))
    for a, s in enumerate(sigs):
        if s[i] is not None:
            m[s[i], a] = 1
            if ncells > 1:
                m[ncells, a] = 1
    return m


def audit(engine: DuckDBEngine, ds: Dataset, new: Release, history: list[Release], *, k: int,
          strict: bool = True, linear: bool = False) -> None:
    """Raise DifferencingRisk if releasing ``new`` after ``history`` breaks a rule above."""
    if not new.keys:
        return  # nothing released, nothing learnt
    total = len(new.keys)
    kept = []
    for h in history:  # newest first
        if total + len(h.keys) > MAX_POPULATIONS:
            break
        if h.keys:
            kept.append(h)
            total += len(h.keys)
    releases = [new, *kept]
    w, sigs, filter_atoms = atoms(engine, ds, releases)
    if strict and np.any((filter_atoms > 0.5) & (filter_atoms < k)):
        raise DifferencingRisk(
            f"together with your earlier results on datasets/{ds.name}, this query's filter would select, by "
            f"combination, fewer than {k} rows", metadata={"dataset": ds.name, "rule": "filter_atoms"})
    if not len(w):
        return
    pops = [_populations(sigs, i, len(rel.keys)) for i, rel in enumerate(releases)]
    b = pops[0]
    if len(pops) > 1:
        hist = np.vstack(pops[1:])
        size_b, size_h = b @ w, hist @ w
        inter = (b * w) @ hist.T
        sym = size_b[:, None] + size_h[None, :] - 2 * inter
        if np.any((sym > 0.5) & (sym < k)):
            raise DifferencingRisk(
                f"this result would differ from one you already received on datasets/{ds.name} by fewer than "
                f"{k} rows; subtracting the two would single people out",
                metadata={"dataset": ds.name, "rule": "pairwise"})
    small = (w > 0.5) & (w < k)
    if not linear or not small.any():
        return
    m = np.vstack([p[: len(rel.keys)] for p, rel in zip(pops, releases)])
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    rank = int((s > s.max() * max(m.shape) * 1e-12).sum()) if len(s) else 0
    proj = (vt[:rank] ** 2).sum(axis=0)
    if np.any(proj[small] > EXACT):
        raise DifferencingRisk(
            f"combined with your earlier results on datasets/{ds.name}, this result would let a population of "
            f"fewer than {k} rows be computed exactly", metadata={"dataset": ds.name, "rule": "linear"})
