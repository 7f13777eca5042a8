"""Beyond one machine: how the pushed-down aggregate's time grows with rows on each engine
(embedded DuckDB on Parquet, PostgreSQL on a table, Spark SQL in local mode on the same Parquet
file), and how Paillier encryption and decryption scale with worker processes -- on the local
pool and on a Dask cluster.

Every engine runs the same validated plan through Veil's own renderer and returns the same
integer statistics (checked here at every size, for every query); the time is the engine call,
median of ``--repeat`` after a warm-up (file cache, buffer cache, Spark's JIT); ``--repeat-large``
runs above 10M rows. What the analyst waits for on top (gRPC, policy, encryption,
audit) is the same for every engine: see query_bench.

Data. Up to 10M rows, query_bench's in-memory generator; above, the same distribution streamed to
Parquet in 1M-row row groups (``veil_server.cli.demo.write_patients_parquet``: bounded memory,
100M rows ~1.6 GB, a couple of minutes). Files are cached under ``bench/.data``. PostgreSQL data
lives in a database ``veil_bench`` on the local server (``$VEIL_BENCH_POSTGRES`` to point
elsewhere), one unlogged table per size, loaded by a streaming ``COPY ... FREEZE`` of the Parquet
file's row groups as CSV (100M rows: a few minutes, ~10 GB), dropped at the end unless
``--keep-postgres`` (then a re-run skips the load). Generation and load times are printed.

Sizes are never extrapolated into the table: an engine whose last measured size, scaled up by
rows, would exceed ``--run-budget`` seconds per run is not run at the larger size, and the table
says "not run" with the reason (so does a failed load or a missing engine).

    python bench/scale_bench.py [--rows 1000000,10000000,100000000] [--repeat 3] [--repeat-large 3]
                                [--engines duckdb,postgres,spark] [--run-budget 180] [--keep-postgres]
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
from veil_server.query.catalog import Catalog  # noqa: E402
from veil_server.config import dataset_from_dict  # noqa: E402
from veil_server.cli.demo import dataset_toml, write_patients_parquet  # noqa: E402
from veil_server.query.routing import RoutingEngine  # noqa: E402  (DuckDB for files)
from veil_server.query.planner import plan_query  # noqa: E402

BENCH_DB = "veil_bench"
ADMIN = os.environ.get("VEIL_BENCH_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
IN_MEMORY_ROWS = 10_000_000  # up to here query_bench builds the table in memory
QUERIES = {
    "80 groups x 3": "SELECT region, diagnosis, COUNT(*), AVG(cost), SUM(length_of_stay) FROM patients "
                     "GROUP BY region, diagnosis",
    "160 groups x 6": "SELECT region, diagnosis, sex, COUNT(*), SUM(cost), AVG(cost), AVG(length_of_stay), "
                      "STDDEV(cost), VARIANCE(age) FROM patients WHERE admitted_year >= 2016 "
                      "GROUP BY region, diagnosis, sex",
}
LABEL = {"duckdb": "DuckDB", "postgres": "PostgreSQL", "spark": "Spark local"}


def dataset(**source):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))["datasets"][0]
    raw.pop("source")
    return dataset_from_dict({**raw, **source})


def data_file(rows: int, prep: dict) -> Path:
    """The cached Parquet file of ``rows`` synthetic admissions (generated on first use)."""
    if rows <= IN_MEMORY_ROWS:
        return query_bench.dataset(rows)
    path = query_bench.DATA / f"patients_{rows}.parquet"
    if not path.exists():
        print(f"  generating {rows:,} synthetic rows in 1M-row chunks -> {path}", file=sys.stderr)
        t0 = time.perf_counter()
        write_patients_parquet(rows, path)
        prep[("generate", rows)] = time.perf_counter() - t0
    return path


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
    """``bench.patients_<rows>``, loaded once; the load's seconds (0 when it was already there).

    One transaction creates the unlogged table and streams the Parquet file into it, a row group
    at a time as CSV, with ``COPY ... FREEZE`` (rows written frozen: no hint-bit rewrite and no
    vacuum before the first scan); a comment marks the load complete for the next run.
    """
    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.parquet as papq

    name = f"bench.patients_{rows}"
    done = f"veil-bench {rows} rows"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        if conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [name]).fetchone()[0] == done:
            return name, 0.0
    print(f"  loading {rows:,} rows into PostgreSQL {name}", file=sys.stderr)
    t0 = time.perf_counter()
    with psycopg.connect(conninfo) as conn:  # one transaction: FREEZE needs the table created in it
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE UNLOGGED TABLE {name} (patient_id BIGINT, region TEXT, sex TEXT, age BIGINT, "
                     "diagnosis TEXT, postcode TEXT, admitted_year BIGINT, length_of_stay BIGINT, "
                     "cost DOUBLE PRECISION)")
        source = papq.ParquetFile(parquet)
        with conn.cursor() as cur, cur.copy(f"COPY {name} FROM STDIN (FORMAT csv, FREEZE)") as copy:
            for batch in source.iter_batches(batch_size=1_000_000):
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                copy.write(buf.getvalue())
        conn.execute(f"COMMENT ON TABLE {name} IS '{done}'")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"ANALYZE {name}")
    return name, time.perf_counter() - t0


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


class Backends:
    """The engines under test, each able to serve a size (or to say why it cannot)."""

    def __init__(self, engines: list[str], prep: dict) -> None:
        self.prep = prep
        self.available: dict[str, object] = {}
        self.unavailable: dict[str, str] = {}
        self.conninfo: str | None = None
        self.tables: dict[int, str] = {}
        self.session = None
        if "duckdb" in engines:
            self.available["duckdb"] = RoutingEngine()
        if "postgres" in engines:
            self.conninfo = postgres_conninfo()
            if self.conninfo is None:
                self.unavailable["postgres"] = "PostgreSQL not reachable"
            else:
                from veil_server.query.engines.postgres import PostgresEngine

                self.available["postgres"] = PostgresEngine()
        if "spark" in engines:
            try:
                from veil_server.query.engines.spark import SparkEngine, spark_session

                t0 = time.perf_counter()
                self.session = spark_session("local[*]", app_name="veil-bench")
                print(f"  Spark local session started in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                self.available["spark"] = SparkEngine(self.session)
            except ImportError:
                self.unavailable["spark"] = "pyspark not installed (pip install -e '.[spark]')"

    def dataset(self, engine: str, rows: int, path: Path):
        """The dataset ``engine`` reads at ``rows`` (PostgreSQL: loads the table first)."""
        if engine == "duckdb":
            return dataset(source=str(path))
        if engine == "spark":
            return dataset(format="spark", source=str(path))
        if rows not in self.tables:
            self.tables[rows], load_s = postgres_table(self.conninfo, rows, path)
            if load_s:
                self.prep[("load", rows)] = load_s
                print(f"  ({rows:,} rows loaded into PostgreSQL in {load_s:.0f} s, once)", file=sys.stderr)
        return dataset(format="postgres", table=self.tables[rows], conninfo=self.conninfo)

    def close(self) -> None:
        for engine in self.available.values():
            getattr(engine, "close", lambda: None)()
        if self.session is not None:
            self.session.stop()  # its JVM would otherwise compete with the crypto workers below


def engine_table(sizes: list[int], engines: list[str], repeat: int, repeat_large: int,
                 run_budget: float, prep: dict) -> tuple[list[dict], dict[tuple[str, int], str]]:
    """One row per (size, query): engine -> seconds. Also (engine, size) -> why it was not run."""
    import psycopg

    backends = Backends(engines, prep)
    skipped: dict[tuple[str, int], str] = {(e, n): why for e, why in backends.unavailable.items() for n in sizes}
    largest: dict[str, tuple[int, float]] = {}  # engine -> (rows, slowest run) at its largest measured size
    rows_out = []
    try:
        for n in sizes:
            path = data_file(n, prep)
            reps = repeat if n <= IN_MEMORY_ROWS else repeat_large
            runnable = []
            for name in backends.available:
                if name in largest:
                    m, t = largest[name]
                    estimate = t * n / m
                    if estimate > run_budget:
                        skipped[(name, n)] = (f"a run at {m:,} rows took {t:.1f} s; {n // m}x the rows would take "
                                              f"~{estimate:.0f} s per run, over --run-budget {run_budget:.0f} s")
                        continue
                try:
                    runnable.append((name, backends.dataset(name, n, path)))
                except psycopg.Error as e:
                    skipped[(name, n)] = f"load failed ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
            for qname, sql in QUERIES.items():
                row: dict = {"rows": n, "query": qname, "repeat": reps}
                reference = None
                for name, ds in runnable:
                    engine = backends.available[name]
                    p = plan_query(sql, Catalog([ds]))
                    seconds, result = timed(lambda e=engine, p=p, ds=ds: e.aggregate(p, ds), reps)
                    row[name] = seconds
                    prev = largest.get(name)
                    largest[name] = (n, max(seconds, prev[1] if prev and prev[0] == n else 0.0))
                    if reference is None:
                        reference = (name, canonical(result))
                    elif canonical(result) != reference[1]:
                        raise SystemExit(f"{name} disagrees with {reference[0]} on {qname} at {n:,} rows")
                print(f"  {n:>12,} {qname}: " + ", ".join(f"{LABEL[k]} {row[k] * 1e3:.0f} ms" for k, _ in runnable)
                      + (" -- same integers" if len(runnable) > 1 else ""), file=sys.stderr)
                rows_out.append(row)
    finally:
        backends.close()
    return rows_out, skipped


# -- crypto ---------------------------------------------------------------------------------------

def crypto_scaling(workers: list[int], count: int, repeat: int,
                   small: int = 256) -> list[tuple[str, float, float, float]]:
    """(where, encryptions/s, decryptions/s, ms for one ``small``-value encryption batch), 2048-bit key:
    in this process, the local pool by worker processes (decryption: threads, where it runs outside
    the GIL, ``veil.crypto.consttime``), and a Dask LocalCluster of 2 workers.

    Best of ``repeat`` runs: on a machine shared with other work, the fastest run is the least
    disturbed one (the CPU time of a chunk is the same in a worker as here; its wall time is not).
    """
    from veil.crypto import consttime
    from veil.crypto.pool import shutdown

    pk, sk = generate_keypair(bits=2048)
    values = [(i * 7919) % 10**12 for i in range(count)]
    pk.encrypt_many(values[:256], workers=1)  # this process's fixed-base table
    out = []

    def best(fn) -> tuple[float, object]:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = fn()
            runs.append((time.perf_counter() - t0, result))
        return min(runs, key=lambda r: r[0])

    def measure(where: str, **place) -> None:
        pk.encrypt_many(values, **place)  # warm: spawn, and each worker's fixed-base table
        enc_s, cts = best(lambda: pk.encrypt_many(values, **place))
        sk.decrypt_many(cts[:64], **place)
        dec_s, plain = best(lambda: sk.decrypt_many(cts, **place))
        if plain != values:
            raise SystemExit(f"{where}: decryption disagrees with the plaintexts")
        small_s, _ = best(lambda: pk.encrypt_many(values[:small], **place))
        out.append((where, count / enc_s, count / dec_s, small_s * 1e3))

    for w in workers:
        # Decryption with OpenSSL's constant-time routine runs on threads, not processes.
        dec_on = "threads" if consttime.backend() == "openssl" else "processes"
        measure("in this process" if w == 1 else f"local pool, {w} processes/{dec_on}", workers=w)
    shutdown()
    try:
        from distributed import LocalCluster

        from veil.crypto.cluster import connect
    except ImportError:
        print("  Dask not installed (pip install -e '.[dask]'): the cluster row is not run", file=sys.stderr)
        return out
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        executor = connect("dask://" + cluster.scheduler_address.removeprefix("tcp://"))
        print(f"  Dask LocalCluster (2 worker processes) up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        try:
            # The executor is passed explicitly, so decryption runs there too (p and q cross to it).
            measure("Dask LocalCluster, 2 workers", executor=executor)
        finally:
            executor.shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,10000000,100000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repeat-large", type=int, default=3, help=f"timed runs above {IN_MEMORY_ROWS:,} rows")
    ap.add_argument("--engines", default="duckdb,postgres,spark")
    ap.add_argument("--run-budget", type=float, default=180.0,
                    help="seconds one run may be expected to take before a larger size is not run")
    ap.add_argument("--crypto-count", type=int, default=4096)
    ap.add_argument("--crypto-repeat", type=int, default=3, help="crypto rows: best of this many runs")
    ap.add_argument("--keep-postgres", action="store_true", help="keep the veil_bench database for a re-run")
    args = ap.parse_args(argv)
    sizes = sorted(int(x) for x in args.rows.split(","))
    engines = args.engines.split(",")
    t_start = time.perf_counter()
    prep: dict = {}
    try:
        table, skipped = engine_table(sizes, engines, args.repeat, args.repeat_large, args.run_budget, prep)
    finally:
        if not args.keep_postgres and "postgres" in engines:
            drop_postgres()
    names = [e for e in ("duckdb", "postgres", "spark") if e in engines]
    cpus = os.cpu_count()
    large = any(n > IN_MEMORY_ROWS for n in sizes) and args.repeat_large != args.repeat
    print(f"\nPushed-down aggregate, engine time (same plan, same integers at every size), {cpus} cores, "
          f"median of {args.repeat}"
          + (f" ({args.repeat_large} above {IN_MEMORY_ROWS:,} rows)" if large else "")
          + ", after a warm-up run")
    cell = lambda r, e: f"{r[e] * 1e3:>15,.0f}" if e in r else f"{'not run':>15}"  # noqa: E731
    ratio = lambda r, e: f"{r[e] / r['duckdb']:>18.1f}x" if e in r and "duckdb" in r else f"{'-':>19}"  # noqa: E731
    print(f"{'rows':>12} {'query':>16} " + " ".join(f"{LABEL[e] + ' ms':>15}" for e in names)
          + " " + " ".join(f"{LABEL[e] + '/DuckDB':>19}" for e in names[1:]))
    for r in table:
        print(f"{r['rows']:>12,} {r['query']:>16} " + " ".join(cell(r, e) for e in names)
              + " " + " ".join(ratio(r, e) for e in names[1:]))
    if skipped:
        print("Not run (nothing above is estimated):")
        for (e, n), why in sorted(skipped.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"  {LABEL[e]} at {n:,} rows: {why}")
    for e in names:
        measured = sorted({r["rows"] for r in table if e in r})
        if len(measured) > 1:
            lo, hi = measured[0], measured[-1]
            growth = []
            for q in QUERIES:
                a = next(r for r in table if r["rows"] == lo and r["query"] == q)
                b = next(r for r in table if r["rows"] == hi and r["query"] == q)
                growth.append(f"{q} {b[e] / a[e]:.1f}x")
            print(f"Growth {LABEL[e]}, {lo:,} -> {hi:,} rows ({hi // lo}x the rows): " + ", ".join(growth))
    if prep:
        print("Data preparation (once; files cached under bench/.data, tables with --keep-postgres): " + ", ".join(
            f"{'generated' if k == 'generate' else 'PostgreSQL load of'} {n:,} rows {s:.0f} s"
            for (k, n), s in sorted(prep.items(), key=lambda kv: kv[0][1])))

    workers = [1, 2] if (cpus or 1) >= 2 else [1]
    scaling = crypto_scaling(workers, args.crypto_count, args.crypto_repeat)
    print(f"\nPaillier (2048-bit) throughput by where the batch runs, {args.crypto_count} values, "
          f"best of {args.crypto_repeat}")
    print(f"{'where':>30} {'encrypt/s':>11} {'speed-up':>9} {'decrypt/s':>11} {'speed-up':>9} "
          f"{'256-value batch ms':>19}")
    for where, enc, dec, small_ms in scaling:
        print(f"{where:>30} {enc:>11,.0f} {enc / scaling[0][1]:>8.2f}x {dec:>11,.0f} {dec / scaling[0][2]:>8.2f}x "
              f"{small_ms:>19,.0f}")
    if any(w.startswith("Dask") for w, *_ in scaling):
        print("(The Dask cluster shares these cores: it cannot beat the local pool here; the row shows the path "
              "works and what it costs. The same encryption and decryption checked against the plaintexts.)")
    print(f"\n(scale bench: {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
