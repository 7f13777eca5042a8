"""`make demo-federated`: three member nodes on loopback, one federated query, two protocols.

Writes ``.demo/federated/`` (one folder per member: its own part of a synthetic admissions
table, its own principals, Ed25519 node key, audit log and a [federation] section pinning the
other two members' keys), starts the three nodes' gRPC servers on free loopback ports, and as
analyst ``alice`` -- connected to ``north`` only -- runs one grouped aggregate over the
federated dataset ``admissions`` under Paillier and under secret sharing. It prints the totals,
checks them against DuckDB over the union of the three raw parts, shows what each party saw
(every message each node received, and a uniformity test on the masked data in them), shows
each node's own audit entries, and ends with a member refusing a purpose its policy forbids.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import os
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np

import veil
from veil.federation import FederationFailed
from veil.v1 import federation_pb2
from veil_server.config import load_config
from veil_server.cli.federation_demo import init_federation
from veil_server.api.server import run_server

ROOT = Path(__file__).resolve().parent.parent / ".demo" / "federated"
ROWS = (40_000, 25_000, 15_000)
SQL = ("SELECT region, diagnosis, FLOOR(age / 20) * 20 AS age_band, COUNT(*) AS n, SUM(cost) AS total_cost,"
       " AVG(length_of_stay) AS avg_stay, STDDEV(cost) AS sd_cost FROM admissions GROUP BY region, diagnosis, age_band")
REF = ("SELECT region, diagnosis, CAST(FLOOR(age / 20) * 20 AS BIGINT) AS age_band, COUNT(*) AS n,"
       " SUM(cost) AS total_cost, AVG(length_of_stay) AS avg_stay FROM read_csv_auto([{parts}]) GROUP BY ALL")


def uniformity_p(data: bytes) -> float:
    """Chi-square on byte frequencies (Wilson-Hilferty): small p means visibly non-uniform."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(float)
    e = len(data) / 256
    x, k = float(((counts - e) ** 2 / e).sum()), 255
    z = ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def payload(data: bytes) -> federation_pb2.PeerPayload:
    return federation_pb2.PeerPayload.FromString(federation_pb2.PeerEnvelope.FromString(data).payload)


def what_was_seen(messages) -> None:
    by_node: dict[str, Counter] = {}
    size: Counter = Counter()
    masked: dict[str, bytearray] = {}
    for node, what, sender, data in messages:
        by_node.setdefault(node, Counter())[what] += 1
        size[node] += len(data)
        if what == "share":
            masked.setdefault(f"{node}: shares it opened", bytearray()).extend(data)
        elif what == "response:contribute" and payload(data).contribution.masked_counts:
            masked.setdefault(f"{node}: masked count vectors", bytearray()).extend(payload(data).contribution.masked_counts)
        elif what == "response:aggregate":
            masked.setdefault(f"{node}: summed count shares", bytearray()).extend(payload(data).aggregated.count_share)
    for node in sorted(by_node):
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(by_node[node].items()))
        print(f"    {node:<6} received {size[node] / 1024:7.1f} KiB: {kinds}")
    for label, data in masked.items():
        p = uniformity_p(bytes(data))
        print(f"    {label}: {len(data)} bytes, byte-uniformity p = {p:.3f}"
              f" ({'uniform: nothing to read' if p > 1e-6 else 'NOT UNIFORM'})")


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    print("Writing three member nodes under", ROOT)
    members = init_federation(ROOT, rows=ROWS, min_group_size=(10, 15, 10))
    # south's policy does not allow purpose "planning": used at the end.
    cfg = members["south"].config
    cfg.write_text(cfg.read_text().replace('purposes = ["research", "planning"]', 'purposes = ["research"]'))
    parts = ", ".join(f"'{m.part}'" for m in members.values())
    reference = duckdb.sql(REF.format(parts=parts)).df().set_index(["region", "diagnosis", "age_band"])
    # For contrast: what an unmasked partial looks like to the same test (north's own counts).
    own = duckdb.sql(REF.format(parts=f"'{members['north'].part}'")).df()["n"].to_numpy(dtype="<u8").tobytes()
    messages: list = []
    with contextlib.ExitStack() as stack:
        running = {n: stack.enter_context(run_server(load_config(m.config, env={}), grace=0.5))
                   for n, m in members.items()}
        for r in running.values():
            r.federation.observe(lambda *m: messages.append(m))
        for (n, m), rows in zip(members.items(), ROWS):
            print(f"  {n:<6} serving on {m.target}: own part of {rows:,} rows,"
                  f" k = {running[n].node.dataset('patients').min_group_size}, node key {running[n].node.audit.key.key_id[:16]}")
        print(f"  (for contrast, north's own unmasked count vector: byte-uniformity p = {uniformity_p(own * 4):.1e})")
        home = ROOT / "alice-home"
        with veil.connect(members["north"].target, token=members["north"].tokens["alice"], home=home) as node:
            print("\nAnalyst alice (connected to north only) creates her 2048-bit Paillier key ...")
            node.keys  # noqa: B018
            print(f"\n{SQL}\n")
            for protocol in ("paillier", "sharing"):
                start = len(messages)
                t0 = time.perf_counter()
                df = node.federated_query(SQL, purpose="research", protocol=protocol)
                took = time.perf_counter() - t0
                released = df[~df["suppressed"]]
                ref = [reference.loc[(r.region, r.diagnosis, r.age_band)] for r in released.itertuples()]
                ok = all(r.n == x["n"] and abs(r.total_cost - x["total_cost"]) < 0.005
                         and math.isclose(r.avg_stay, x["avg_stay"], rel_tol=1e-9)
                         for r, x in zip(released.itertuples(), ref))
                ok = ok and len(released) == int((reference["n"] >= 15).sum())
                print(f"== {protocol}: {len(df)} groups ({len(released)} released, {int(df['suppressed'].sum())}"
                      f" suppressed: combined count < k = 15), {took:.2f} s, "
                      f"equal to DuckDB over the union of the raw parts: {'yes' if ok else 'NO'}")
                print(released.head(5).to_string(index=False))
                print("  What each party saw (every peer message received; the analyst saw only the totals):")
                what_was_seen(messages[start:])
            print("\nEach node's own audit log (entries for these queries):")
            for n, r in running.items():
                kinds = Counter(e.kind for e in r.node.audit.log.search(kind="query.*", page_size=1000).entries)
                print(f"  {n:<6} " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
            print("\nA purpose south's policy refuses ('planning'):")
            try:
                node.federated_query(SQL, purpose="planning")
            except FederationFailed as e:
                print(f"  refused: node={e.node!r} reason={e.reason} ({e.metadata.get('peer_reason')}); nothing released")
    print("\nNodes stopped.")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
    # Every node is stopped and durable by now. Skip interpreter finalisation, which can kill
    # gRPC and DuckDB library threads mid-call and abort an otherwise clean exit.
    sys.stdout.flush()
    os._exit(0)
