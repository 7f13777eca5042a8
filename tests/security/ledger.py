"""The hardening tests' ledger: what each attack, fuzz run, fault and load test did, and how it ended.

Each test records one row when its assertions have passed (a failing test records nothing). At
the end of a session in which every expected row was recorded and no test failed, the table in
SECURITY.md (between the ``security-results`` markers) is regenerated from the rows, so the
document states exactly what the suite last proved. Counts are deterministic (fixed seeds);
volatile figures (RSS, calls refused under load, timings) go to ``build/security-figures.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY_MD = ROOT / "SECURITY.md"
FIGURES = ROOT / "build" / "security-figures.json"
BEGIN, END = "<!-- security-results:begin -->", "<!-- security-results:end -->"
KINDS = {"fuzz": "fuzzed messages", "attack": "hand-written attacks", "fault": "faults injected", "load": "load held"}

# Every row the full suite must produce before the table is rewritten.
EXPECTED = {
    "fuzz:rpc-random", "fuzz:rpc-mutated", "fuzz:sql-planner", "fuzz:sql-grammar",
    "attack:certificates", "attack:tokens", "attack:roles", "attack:isolation", "attack:hostile-sql",
    "attack:paillier-input", "attack:oversize", "attack:lint",
    "attack:disclosure-oracle", "attack:disclosure-weighted", "attack:disclosure-collusion",
    "attack:disclosure-window", "attack:disclosure-margins", "attack:disclosure-dominance",
    "attack:disclosure-federated", "attack:disclosure-refusals",
    "fault:shutdown", "fault:disconnect", "fault:disk-full", "fault:state-dir-read-only", "fault:revocation-list",
    "load:analysts", "fault:damaged-files", "fuzz:file-flips", "load:large-bodies", "attack:witness",
    "attack:console-csrf", "attack:console-roles",
}


@dataclass
class Row:
    kind: str
    key: str
    what: str
    count: int
    crashes: int = 0
    hangs: int = 0
    leaked: int = 0
    lost: int = 0


ROWS: dict[str, Row] = {}
FIGS: dict[str, object] = {}


def record(kind: str, key: str, what: str, count: int, *, crashes: int = 0, hangs: int = 0, leaked: int = 0,
           lost: int = 0) -> None:
    assert kind in KINDS
    ROWS[f"{kind}:{key}"] = Row(kind, key, what, count, crashes, hangs, leaked, lost)


def figure(name: str, value: object) -> None:
    FIGS[name] = value


def table() -> str:
    lines = ["| kind | what | count | crashes | hangs | data leaked | acknowledged work lost |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for kind, label in KINDS.items():
        rows = sorted((r for r in ROWS.values() if r.kind == kind), key=lambda r: r.key)
        for r in rows:
            lines.append(f"| {label} | {r.what} | {r.count} | {r.crashes} | {r.hangs} | {r.leaked} | {r.lost} |")
        if rows:
            tot = [sum(getattr(r, f) for r in rows) for f in ("count", "crashes", "hangs", "leaked", "lost")]
            lines.append(f"| **{label}** | **total** | **{tot[0]}** | **{tot[1]}** | **{tot[2]}** | **{tot[3]}** "
                         f"| **{tot[4]}** |")
    return "\n".join(lines)


def write(session_failed: bool) -> bool:
    """Rewrite the table when the run was complete and green; always dump the figures."""
    if ROWS or FIGS:
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps({"rows": {k: asdict(v) for k, v in ROWS.items()}, "figures": FIGS},
                                      indent=2, default=str))
    if session_failed or not EXPECTED <= set(ROWS) or not SECURITY_MD.exists():
        return False
    text = SECURITY_MD.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", text)
    if new != text:
        SECURITY_MD.write_text(new, encoding="utf-8")
    return True
