"""Beyond one machine: how the pushed-down aggregate's time grows with rows on each engine
(embedded DuckDB on Parquet, PostgreSQL on a table, Spark SQL in local mode on the same Parquet
file), and how Paillier encryption and decryption scale with worker processes.

Every engine runs the same validated plan through Veil's own renderer and returns the same
integer statistics (checked here once per size); the time is the engine call, median of
``--repeat`` after a warm-up (file cache, buffer cache, Spark's JIT). What the analyst waits for
on top (gRPC, policy, encryption, audit) is the same for every engine: see query_bench.

PostgreSQL data lives in a database ``veil_bench`` on the local server (``$VEIL_BENCH_POSTGRES``
to point elsewhere), one unlogged table per size (10M rows load in ~15 s), dropped at the end
unless ``--keep-postgres`` (then a re-run skips the load). 100M rows are not run by default: on this 2-core machine the
generator alone takes minutes and the PostgreSQL load about ten times the 10M load.

    python bench/scale_bench.py [--rows 1000000,10000000] [--repeat 3] [--engines duckdb,postgres,spark]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import query_bench  # noqa: E402  (the Parquet files it generates and caches)

from veil.crypto import generate_keypair  # noqa: E402
from veil_server.catalog import Catalog  # noqa: E402
from veil_server.config import dataset_from_dict  # noqa: E402
from veil_server.demo import dataset_toml  # noqa: E402
from veil_server.engine import RoutingEngine  # noqa: E402  (DuckDB for files)
from veil_server.planner import plan_query  # noqa: E402

BENCH_DB = "veil_bench"
ADMIN = os.environ.get("VEIL_BENCH_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
QUERIES = {
    "80 groups x 3": "SELECT region, diagnosis, COUNT(*), AVG(cost), SUM(length_of_stay) FROM patients "
                     "GROUP BY region, diagnosis",
    "160 groups x 6": "SELECT region, diagnosis, sex, COUNT(*), SUM(cost), AVG(cost), AVG(length_of_stay), "
                      "STDDEV(cost), VARIANCE(age) FROM patients WHERE admitted_year >= 2016 "
                      "GROUP BY region, diagnosis, sex",
}


def dataset(**source):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))["datasets"][0]
    raw.pop("source")
    return dataset_from_dict({**raw, **source})


# -- PostgreSQL -----------------------------------------------------------------------------------

def postgres_conninfo() -> str | None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=3) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    except psycopg.OperationalError as e:
        print(f"  PostgreSQL not reachable ({str(e).splitlines()[0]}): skipped", file=sys.stderr)
        return None
    return make_conninfo(ADMIN, dbname=BENCH_DB)


def postgres_table(conninfo: str, rows: int, parquet: Path) -> tuple[str, float]:
    """``bench.patients_<rows>``, loaded once (COPY of the Parquet file's rows); load seconds."""
    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.parquet as papq

    name = f"patients_{rows}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"bench.{name}"]).fetchone()[0]
        if have and conn.execute(f"SELECT COUNT(*) FROM bench.{name}").fetchone()[0] == rows:
            return f"bench.{name}", 0.0
        print(f"  loading {rows:,} rows into PostgreSQL bench.{name}", file=sys.stderr)
        t0 = time.perf_counter()
        conn.execute(f"DROP TABLE IF EXISTS bench.{name}")
        conn.execute(f"CREATE UNLOGGED TABLE bench.{name} (patient_id BIGINT, region TEXT, sex TEXT, age BIGINT, "
                     "diagnosis TEXT, postcode TEXT, admitted_year BIGINT, length_of_stay BIGINT, "
                     "cost DOUBLE PRECISION)")
        source = papq.ParquetFile(parquet)
        with conn.cursor() as cur, cur.copy(f"COPY bench.{name} FROM STDIN (FORMAT csv)") as copy:
            for batch in source.iter_batches(batch_size=1_000_000):
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                copy.write(buf.getvalue())
        conn.execute(f"VACUUM ANALYZE bench.{name}")
        return f"bench.{name}", time.perf_counter() - t0


def drop_postgres() -> None:
    import psycopg

    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    except psycopg.OperationalError:
        pass  # no server: nothing was created


# -- timing ---------------------------------------------------------------------------------------

def timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


def canonical(result) -> tuple:
    return result.rows_matched, sorted((g.keys, g.rows, sorted((k, (s.count, s.total, s.squares))
                                                               for k, s in g.columns.items())) for g in result.groups)


def engine_table(sizes: list[int], engines: list[str], repeat: int) -> list[dict]:
    paths = {n: query_bench.dataset(n) for n in sizes}
    backends: dict[str, tuple] = {}
    if "duckdb" in engines:
        backends["duckdb"] = (RoutingEngine(), lambda n: dataset(source=str(paths[n])))
    if "postgres" in engines and (conninfo := postgres_conninfo()) is not None:
        from veil_server.engines.postgres import PostgresEngine

        tables = {}
        for n in sizes:
            tables[n], load_s = postgres_table(conninfo, n, paths[n])
            if load_s:
                print(f"  ({n:,} rows loaded into PostgreSQL in {load_s:.0f} s, once)", file=sys.stderr)
        backends["postgres"] = (PostgresEngine(), lambda n: dataset(format="postgres", table=tables[n],
                                                                     conninfo=conninfo))
    if "spark" in engines:
        try:
            from veil_server.engines.spark import SparkEngine, spark_session

            t0 = time.perf_counter()
            session = spark_session("local[*]", app_name="veil-bench")
            print(f"  Spark local session started in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            backends["spark"] = (SparkEngine(session), lambda n: dataset(format="spark", source=str(paths[n])))
        except ImportError:
            print("  pyspark not installed (pip install -e '.[spark]'): Spark skipped", file=sys.stderr)
    rows = []
    for n in sizes:
        for qname, sql in QUERIES.items():
            row: dict = {"rows": n, "query": qname}
            reference = None
            for name, (engine, make) in backends.items():
                ds = make(n)
                p = plan_query(sql, Catalog([ds]))
                seconds, result = timed(lambda e=engine, p=p, ds=ds: e.aggregate(p, ds), repeat)
                row[name] = seconds
                if reference is None:
                    reference = canonical(result)
                elif canonical(result) != reference:
                    raise SystemExit(f"{name} disagrees with {next(iter(backends))} on {qname} at {n:,} rows")
            rows.append(row)
    for engine, _ in backends.values():
        getattr(engine, "close", lambda: None)()
    if "spark" in backends:
        session.stop()  # its JVM would otherwise compete with the crypto workers below
    return rows


def crypto_scaling(workers: list[int], count: int) -> list[tuple[int, float, float]]:
    """Encryptions and decryptions per second (2048-bit key) with 1, 2, ... worker processes."""
    from veil.crypto.pool import shutdown

    pk, sk = generate_keypair(bits=2048)
    values = [(i * 7919) % 10**12 for i in range(count)]
    pk.encrypt_many(values[:256], workers=1)  # this process's fixed-base table
    out = []
    for w in workers:
        pk.encrypt_many(values, workers=w)  # warm the pool: spawn, and each worker's fixed-base table
        t0 = time.perf_counter()
        cts = pk.encrypt_many(values, workers=w)
        enc = count / (time.perf_counter() - t0)
        sk.decrypt_many(cts[:64], workers=w)
        t0 = time.perf_counter()
        assert sk.decrypt_many(cts, workers=w) == values
        dec = count / (time.perf_counter() - t0)
        out.append((w, enc, dec))
    shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", default="duckdb,postgres,spark")
    ap.add_argument("--crypto-count", type=int, default=4096)
    ap.add_argument("--keep-postgres", action="store_true", help="keep the veil_bench database for a re-run")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",")]
    t_start = time.perf_counter()
    try:
        table = engine_table(sizes, args.engines.split(","), args.repeat)
    finally:
        if not args.keep_postgres and "postgres" in args.engines:
            drop_postgres()
    names = [e for e in ("duckdb", "postgres", "spark") if any(e in r for r in table)]
    label = {"duckdb": "DuckDB", "postgres": "PostgreSQL", "spark": "Spark local"}
    cpus = os.cpu_count()
    print(f"\nPushed-down aggregate, engine time (same plan, same integers), {cpus} cores, median of {args.repeat}")
    print(f"{'rows':>12} {'query':>16} " + " ".join(f"{label[e] + ' ms':>15}" for e in names)
          + " " + " ".join(f"{label[e] + '/DuckDB':>19}" for e in names[1:]))
    for r in table:
        print(f"{r['rows']:>12,} {r['query']:>16} " + " ".join(f"{r[e] * 1e3:>15.0f}" for e in names)
              + " " + " ".join(f"{r[e] / r['duckdb']:>18.1f}x" for e in names[1:] if "duckdb" in r))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\nGrowth from {lo:,} to {hi:,} rows ({hi / lo:.0f}x the rows):")
        for q in QUERIES:
            a = next(r for r in table if r["rows"] == lo and r["query"] == q)
            b = next(r for r in table if r["rows"] == hi and r["query"] == q)
            print(f"{q:>18}: " + ", ".join(f"{label[e]} {b[e] / a[e]:.1f}x" for e in names))
    workers = [1, 2] if (cpus or 1) >= 2 else [1]
    scaling = crypto_scaling(workers, args.crypto_count)
    print(f"\nPaillier (2048-bit) throughput by worker processes, {args.crypto_count} values")
    print(f"{'workers':>8} {'encrypt/s':>11} {'speed-up':>9} {'decrypt/s':>11} {'speed-up':>9}")
    for w, enc, dec in scaling:
        print(f"{w:>8} {enc:>11,.0f} {enc / scaling[0][1]:>8.2f}x {dec:>11,.0f} {dec / scaling[0][2]:>8.2f}x")
    print(f"\n(scale bench: {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
