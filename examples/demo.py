"""`make demo`: a data owner starts a node, an analyst queries it, end to end over real gRPC.

1. writes a node folder (.demo/) with 100,000 synthetic hospital admissions and tokens;
2. starts `veil node serve` as its own process on a free loopback port;
3. as the analyst "alice": lists the catalog, runs grouped aggregates (results come back
   encrypted under alice's Paillier key and are decrypted here), and shows a refused query;
4. checks the decrypted figures against plain DuckDB on the raw file (the owner's view);
5. stops the node.
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
from veil.transport import open_channel
from veil_server.cli.demo import init_node_folder

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / ".demo"


def start_node(config: Path, ca: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, VEIL_LISTEN="127.0.0.1:0", VEIL_MTLS_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="WARNING")
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
    with open_channel(target, ca=ca) as ch:  # TLS, trusting the node folder's development CA
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(100):
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
    return proc, target


def main() -> None:
    pd.set_option("display.width", 160)
    print("== 1. the data owner sets up a node (100,000 synthetic admissions)")
    # TLS by default: a development CA, node and client certificates, signed expiring tokens.
    if FOLDER.exists():  # a demo starts from nothing: old state may predate this version's schema
        shutil.rmtree(FOLDER)
    tokens = init_node_folder(FOLDER, rows=100_000, force=True, tls=True)
    config, ca = FOLDER / "veil.toml", FOLDER / "tls" / "ca.pem"
    os.environ["VEIL_HOME"] = str(FOLDER / "analyst-home")  # keep the demo's keys inside .demo/

    proc, target = start_node(config, ca)
    print(f"== 2. node serving on {target} over TLS (pid {proc.pid}); alice holds a signed token "
          f"valid 30 days and trusts {ca.relative_to(ROOT)}")
    try:
        with veil.connect(target, token=tokens["alice"], ca=ca) as node:
            print("\n== 3. alice browses the catalog (schemas and rules, never a row)")
            ds = node.dataset("patients")
            print(f"{ds.name}: about {ds.approximate_row_count} rows, purposes {list(ds.purposes)}, "
                  f"groups under {ds.min_group_size} rows suppressed")
            print(ds.columns_frame().to_string(index=False))

            sql = ("SELECT region, COUNT(*) AS admissions, AVG(cost) AS avg_cost, "
                   "STDDEV(length_of_stay) AS sd_stay FROM patients WHERE age >= 65 GROUP BY region")
            print(f"\n== 4. alice asks: {sql}")
            t0 = time.perf_counter()
            result = node.query(sql, purpose="research")
            print(f"(encrypted under alice's 2048-bit Paillier key, decrypted locally, "
                  f"{time.perf_counter() - t0:.2f} s including key setup)")
            print(result.to_string(index=False))

            sql2 = ("SELECT diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n FROM patients "
                    "WHERE region = 'Islands' AND sex = 'F' GROUP BY diagnosis, decade")
            print(f"\n== 5. a fine-grained query; small groups are suppressed, not dropped:\n   {sql2}")
            fine = node.query(sql2, purpose="research")
            print(f"{len(fine)} groups, {int(fine['suppressed'].sum())} suppressed; first rows:")
            print(fine.head(12).to_string(index=False))

            print("\n== 6. alice tries to read raw data")
            for bad in ("SELECT postcode, COUNT(*) FROM patients GROUP BY postcode",
                        "SELECT patient_id, cost FROM patients"):
                try:
                    node.query(bad, purpose="research")
                except veil.VeilError as e:
                    print(f"   refused: {bad}\n     -> {type(e).__name__} {e}")

        print("\n== 7. the owner checks alice's figures against plain DuckDB on the raw file")
        raw = duckdb.sql(
            f"SELECT region, COUNT(*) AS n, AVG(cost) AS avg_cost, STDDEV_SAMP(length_of_stay) AS sd "
            f"FROM read_csv_auto('{FOLDER / 'data' / 'patients.csv'}') WHERE age >= 65 GROUP BY region"
        ).df().set_index("region")
        worst = 0.0
        for _, row in result.iterrows():
            r = raw.loc[row["region"]]
            assert row["admissions"] == r["n"], "count differs"
            for ours, theirs in ((row["avg_cost"], r["avg_cost"]), (row["sd_stay"], r["sd"])):
                worst = max(worst, abs(ours - theirs) / abs(theirs))
        print(f"   counts equal; largest relative difference of averages and deviations: {worst:.1e}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        print("\n== 8. node stopped")


if __name__ == "__main__":
    main()
