"""The web console's page times on a node whose audit log holds 100,000 entries (issue 19's bound:
no page over 300 ms of server time, paged).

A real node (TLS, the console on its own port) with a log of ``--entries`` entries (catalog reads,
refused calls and administrative notes from several principals, appended in batches as the node
appends them, plus one real query approved by an owner at the end) and a usage ledger of
``--ledger`` rows. Each page is requested ``--repeat`` times over HTTPS by a signed-in owner or
auditor; the table gives the median and the largest of the server's own time for the page (its
``Server-Timing`` header: from the request read to the response built, every RPC included) and
the client's round trip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill(node, entries: int, ledger_rows: int) -> None:
    from veil_server.audit.log import Event

    principals = ["alice", "bob", "carol", "dave", "erin"]
    batch = []
    for i in range(entries):
        who = principals[i % len(principals)]
        if i % 10 == 7:
            batch.append(Event("auth.failure", who, "denied", details={"method": "/veil.v1.AuditService/ListAuditEvents",
                                                                        "reason": "ROLE_NOT_ALLOWED", "code": "PERMISSION_DENIED"}))
        elif i % 10 == 9:
            batch.append(Event("admin.bench.note", "adam", "ok", dataset="patients", details={"n": i}))
        else:
            batch.append(Event("catalog.read", who, "ok", dataset="patients", details={"method": "GetDataset"}))
        if len(batch) == 2000:
            node.audit.log.append_many(batch)
            batch = []
    if batch:
        node.audit.log.append_many(batch)
    for i in range(ledger_rows):
        ledger_record(node.disclosure.ledger, i, principals)


def ledger_record(ledger, i: int, principals: list[str]) -> None:
    ledger.record("released", principal=principals[i % len(principals)], dataset="patients",
                  purpose="research", query_id=f"bench{i}", released=1, rows_scanned=100_000, cells_released=24,
                  micro_epsilon=1000, ciphertexts=2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--ledger", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)

    import veil
    from tests.integration.console_support import Client, console_node

    with tempfile.TemporaryDirectory() as tmp, console_node(Path(tmp) / "node") as node:
        t0 = time.perf_counter()
        fill(node.running.node, args.entries, args.ledger)
        fill_s = time.perf_counter() - t0
        home = Path(tmp) / "home"
        with veil.connect(node.target, token=node.tokens["alice"], ca=node.ca, home=home) as alice:
            alice.query("SELECT region, COUNT(*) AS n FROM patients GROUP BY region", purpose="research")
        size = node.running.node.audit.log.tree_size
        owner, auditor = Client(node), Client(node)
        owner.sign_in("olivia")
        auditor.sign_in("audra")
        first = auditor.get("/audit")
        import re

        token = re.search(r'page_token=([^"&]+)"', first.body).group(1)
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 600))
        pages = [
            (auditor, "/audit", "log, first page"),
            (auditor, f"/audit?page_token={token}", "log, next page"),
            (auditor, "/audit?kind=query.approve", "log, kind (one match)"),
            (auditor, "/audit?kind=query.*", "log, kind prefix"),
            (auditor, "/audit?principal=bob", "log, principal"),
            (auditor, "/audit?principal=bob&kind=query.release", "log, principal + kind (no match)"),
            (auditor, "/audit?dataset=patients&outcome=denied", "log, dataset + outcome"),
            (auditor, f"/audit?since={since}", "log, last 10 minutes"),
            (auditor, "/audit/entries/5", "entry 5 with its proof"),
            (auditor, f"/audit/entries/{size - 1}", "latest entry with its proof"),
            (auditor, "/audit/checkpoints", "checkpoints"),
            (auditor, "/usage?period=24h", "usage (auditor)"),
            (owner, "/", "overview"),
            (owner, "/datasets", "datasets"),
            (owner, "/datasets/patients", "dataset detail"),
            (owner, "/reviews", "pending queries"),
            (owner, "/grants", "grants"),
            (owner, "/usage?period=24h", "usage and budgets (owner)"),
            (owner, "/usage.csv?period=24h", "usage CSV"),
        ]
        print(f"Console page times, audit log of {size:,} entries ({fill_s:.0f} s to append), ledger of "
              f"{args.ledger:,} rows; median and max of {args.repeat} requests")
        print(f"{'page':40} {'status':>6} {'server ms':>10} {'max':>8} {'round trip ms':>14}")
        worst = 0.0
        for client, path, name in pages:
            server, trip, status = [], [], 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = client.get(path)
                trip.append((time.perf_counter() - t) * 1000)
                server.append(float(r.headers["Server-Timing"].split("dur=")[1]))
                status = r.status
            worst = max(worst, max(server))
            print(f"{name:40} {status:>6} {statistics.median(server):>10.1f} {max(server):>8.1f} "
                  f"{statistics.median(trip):>14.1f}")
        print(f"slowest page, largest sample: {worst:.1f} ms (bound: 300 ms)")


if __name__ == "__main__":
    main()
