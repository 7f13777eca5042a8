"""`make demo`: a data owner starts a node, an analyst queries it, end to end over real gRPC.

1. writes a node folder (.demo/) with 100,000 synthetic hospital admissions and tokens;
2. starts `veil node serve` as its own process on a free loopback port;
3. as the analyst "alice": lists the catalog, asks what a query's noise would be before
   spending anything, runs grouped aggregates under differential privacy (results come back
   encrypted under alice's Paillier key and are decrypted here), and attacks: raw reads refused,
   a differencing pair drowned in noise, averaging stopped by the privacy budget;
4. checks the DP figures against plain DuckDB on the raw file (the owner's view): each within
   its stated error bound;
5. serves the web console for owners, reviewers and auditors on its own TLS port and prints its
   address (with a terminal, it stays up until you press Enter);
6. stops the node.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import grpc
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc

import veil
from veil.accuracy import bound_at
from veil.transport import open_channel
from veil_server.cli.demo import init_node_folder

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / ".demo"


def start_node(config: Path, ca: Path) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, VEIL_LISTEN="127.0.0.1:0", VEIL_MTLS_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="WARNING",
               VEIL_CONSOLE_ENABLED="1", VEIL_CONSOLE_LISTEN=os.environ.get("VEIL_CONSOLE_LISTEN", "127.0.0.1:0"))
    veil_cmd = [sys.executable, "-m", "veil.cli"]
    proc = subprocess.Popen(veil_cmd + ["node", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"\(port (\d+)\)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the node did not start: {line!r}")
    target = f"127.0.0.1:{m.group(1)}"
    console = re.search(r"veil console on (\S+)", proc.stdout.readline())
    with open_channel(target, ca=ca) as ch:  # TLS, trusting the node folder's development CA
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(100):
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
    return proc, target, console.group(1) if console else ""


def check_console(url: str, ca: Path) -> int:
    """The console's sign-in page over TLS, trusting the demo's development CA."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url + "login", context=context, timeout=10) as page:
        return page.status


def main() -> None:
    pd.set_option("display.width", 160)
    print("== 1. the data owner sets up a node (100,000 synthetic admissions)")
    # TLS by default: a development CA, node and client certificates, signed expiring tokens.
    if FOLDER.exists():  # a demo starts from nothing: old state may predate this version's schema
        shutil.rmtree(FOLDER)
    tokens = init_node_folder(FOLDER, rows=100_000, force=True, tls=True)
    config, ca = FOLDER / "veil.toml", FOLDER / "tls" / "ca.pem"
    os.environ["VEIL_HOME"] = str(FOLDER / "analyst-home")  # keep the demo's keys inside .demo/

    proc, target, console = start_node(config, ca)
    print(f"== 2. node serving on {target} over TLS (pid {proc.pid}); alice holds a signed token "
          f"valid 30 days and trusts {ca.relative_to(ROOT)}")
    if console:
        print(f"   web console: {console} (sign-in page answered {check_console(console, ca)}); sign in with "
              f"{(FOLDER / 'tokens').relative_to(ROOT)}/olivia.token (owner), rita.token (reviewer) or audra.token "
              f"(auditor); the browser must trust {ca.relative_to(ROOT)}")
    try:
        with veil.connect(target, token=tokens["alice"], ca=ca) as node:
            print("\n== 3. alice browses the catalog (schemas and rules, never a row)")
            ds = node.dataset("patients")
            print(f"{ds.name}: about {ds.approximate_row_count} rows, purposes {list(ds.purposes)}, "
                  f"groups under {ds.min_group_size} rows suppressed")
            print(ds.columns_frame().to_string(index=False))

            sql = ("SELECT region, COUNT(*) AS admissions, AVG(age) AS avg_age, SUM(length_of_stay) AS bed_days "
                   "FROM patients GROUP BY region")
            print(f"\n== 4. alice asks: {sql}")
            plan = node.explain(sql, purpose="research")
            print(f"   explain (nothing spent yet): {plan['outcome']}, the dataset releases with differential "
                  f"privacy at ε = {plan['epsilon_cost']:g}; alice has ε {plan['budget_remaining']:g} left. Noise "
                  "per cell, 95 % bound:")
            for a in plan["accuracy"]:
                print(f"     {a['column']:<12} {a['function']:<11} ± {a['error_bound_95']:.4g}")
            t0 = time.perf_counter()
            result = node.query(sql, purpose="research")
            print(f"(encrypted under alice's 2048-bit Paillier key, decrypted locally, "
                  f"{time.perf_counter() - t0:.2f} s including key setup; ε spent "
                  f"{result.attrs['epsilon']:g})")
            print(result.to_string(index=False))

            sql2 = ("SELECT diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n FROM patients "
                    "WHERE region = 'Islands' AND sex = 'F' GROUP BY diagnosis, decade")
            print(f"\n== 5. a fine-grained query; small groups are suppressed, not dropped:\n   {sql2}")
            fine = node.query(sql2, purpose="research")
            print(f"{len(fine)} groups, {int(fine['suppressed'].sum())} suppressed (decided on the noisy counts); "
                  "first rows:")
            print(fine.head(12).to_string(index=False))

            print("\n== 6. alice attacks")
            for bad in ("SELECT postcode, COUNT(*) FROM patients GROUP BY postcode",
                        "SELECT patient_id, cost FROM patients"):
                try:
                    node.query(bad, purpose="research")
                except veil.VeilError as e:
                    print(f"   refused: {bad}\n     -> {type(e).__name__} {e}")
            oldest = duckdb.sql(f"SELECT MAX(age) FROM read_csv_auto('{FOLDER / 'data' / 'patients.csv'}') "
                                "WHERE region = 'Islands'").fetchall()[0][0]
            pair = [f"SELECT SUM(cost) AS s FROM patients WHERE region = 'Islands'",
                    f"SELECT SUM(cost) AS s FROM patients WHERE region = 'Islands' AND age < {oldest}"]
            a, b = (node.query(q, purpose="research")["s"][0] for q in pair)
            truth = duckdb.sql(f"SELECT SUM(cost) FROM read_csv_auto('{FOLDER / 'data' / 'patients.csv'}') "
                               f"WHERE region = 'Islands' AND age = {oldest}").fetchall()[0][0]
            print(f"   differencing: SUM(cost) of the Islands minus the same without patients aged {oldest}\n"
                  f"     -> alice computes {a - b:,.2f}; the true total of those patients is {truth:,.2f}: drowned in"
                  " noise")
            print("   averaging the noise away: the same count asked again and again")
            asked = 0
            while True:
                try:
                    node.query("SELECT COUNT(*) FROM patients WHERE region = 'Islands'", purpose="research")
                    asked += 1
                except veil.VeilError as e:
                    print(f"     -> answered {asked} times, then refused: {type(e).__name__} {e}")
                    break

        print("\n== 7. the owner checks alice's DP figures against plain DuckDB on the raw file")
        raw = duckdb.sql(
            f"SELECT region, COUNT(*) AS n, AVG(age) AS avg_age, SUM(length_of_stay) AS bed_days "
            f"FROM read_csv_auto('{FOLDER / 'data' / 'patients.csv'}') GROUP BY region"
        ).df().set_index("region")
        noise = result.attrs["noise"]
        rows, inside, total = [], 0, 0
        for _, row in result[~result["suppressed"]].iterrows():
            r = raw.loc[row["region"]]
            for col, exact in (("admissions", r["n"]), ("avg_age", r["avg_age"]), ("bed_days", r["bed_days"])):
                total += 1
                inside += abs(row[col] - exact) <= bound_at(noise[col], row["admissions"])
            rows.append({"region": row["region"], "admissions": row["admissions"], "(exact)": int(r["n"]),
                         "avg_age": round(row["avg_age"], 2), "(exact) ": round(r["avg_age"], 2),
                         "bed_days": row["bed_days"], "(exact)  ": int(r["bed_days"])})
        print(pd.DataFrame(rows).to_string(index=False))
        smallest = int(result["admissions"].min())
        print(f"   stated 95 % bounds: admissions ± {noise['admissions']['error_bound_95']:.3g}, bed_days ± "
              f"{noise['bed_days']['error_bound_95']:.3g}, avg_age ± {bound_at(noise['avg_age'], smallest):.3g} for a "
              f"group of {smallest:,} (veil.accuracy.bound_at: an average's bound shrinks with its group)")
        print(f"   {inside} of {total} released cells lie within their stated bound of the exact figure; the noise "
              "follows the declared ranges (a tighter range, clamping outliers, means less noise)")
        if console and sys.stdin.isatty():
            print(f"\n== 8. the console stays up at {console} (what alice did is in its audit log and usage "
                  "pages); press Enter to stop the node")
            sys.stdin.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        print("\n== 9. node stopped")


if __name__ == "__main__":
    main()
