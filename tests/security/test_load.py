"""Load on loopback: dozens of analysts at once against a node with tight per-principal limits.

The node runs as its own process (``veil node serve``) so its resident memory can be read from
/proc. Forty analysts, three threads each, fire calls as fast as they can (catalog reads,
listings, one query each), twice. Properties: every call is answered (OK or
RESOURCE_EXHAUSTED, never a timeout, UNAVAILABLE or INTERNAL); the excess is refused with
RESOURCE_EXHAUSTED and a reason; every query the node accepted finishes SUCCEEDED (no
acknowledged work lost); the node's RSS after the second round is within a bound of the first
(memory does not grow with traffic). Bounded: about 1,400 calls, well under 30 s.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc

import veil
from veil.v1 import catalog_pb2, query_pb2
from veil_server.cli.demo import init_node_folder

from . import ledger
from .conftest import bearer, set_config

ANALYSTS, THREADS, CALLS = 40, 3, 6  # per round: 40 x 3 x 6 = 720 calls
LIMITS = "[limits]\nrequests_per_second = 3\nburst = 6\nmax_concurrent_calls = 2\nmax_open_queries = 4\nrpc_threads = 32\n"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def start(folder) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, VEIL_LISTEN="127.0.0.1:0", VEIL_LOG_LEVEL="ERROR")
    proc = subprocess.Popen([sys.executable, "-m", "veil.cli", "node", "serve", "--config",
                             str(folder / "veil.toml")], env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"\(port (\d+)\)", line)
    assert m, line
    return proc, f"127.0.0.1:{m.group(1)}"


def analyst(target: str, token: str, key: bytes, index: int, results: Counter, reasons: Counter,
            accepted: list, lock: threading.Lock) -> None:
    with grpc.insecure_channel(target) as ch:
        calls = [
            ch.unary_unary("/veil.v1.CatalogService/ListDatasets",
                           request_serializer=catalog_pb2.ListDatasetsRequest.SerializeToString,
                           response_deserializer=catalog_pb2.ListDatasetsResponse.FromString),
            ch.unary_unary("/veil.v1.QueryService/ListQueries",
                           request_serializer=query_pb2.ListQueriesRequest.SerializeToString,
                           response_deserializer=query_pb2.ListQueriesResponse.FromString),
        ]
        submit = ch.unary_unary("/veil.v1.QueryService/SubmitQuery",
                                request_serializer=query_pb2.SubmitQueryRequest.SerializeToString,
                                response_deserializer=query_pb2.Query.FromString)

        def worker(t: int) -> None:
            for i in range(CALLS):
                try:
                    if t == 0 and i == 0:
                        q = submit(query_pb2.SubmitQueryRequest(
                            sql="SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research",
                            request_id=f"load-{index}-{time.monotonic_ns()}",
                            public_key=query_pb2.PaillierPublicKey(n=key)), metadata=bearer(token), timeout=20)
                        with lock:
                            accepted.append((token, q.name))
                    elif i % 2:
                        calls[1](query_pb2.ListQueriesRequest(page_size=5), metadata=bearer(token), timeout=20)
                    else:
                        calls[0](catalog_pb2.ListDatasetsRequest(), metadata=bearer(token), timeout=20)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        with lock:
                            reasons[veil.errors.from_rpc_error(e).reason] += 1
                with lock:
                    results[code] += 1

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()


def test_dozens_of_analysts_under_limits(tmp_path, analyst_home):
    tokens = init_node_folder(tmp_path, rows=2_000, disclosure="exact")
    names = [f"analyst{i:02d}" for i in range(ANALYSTS)]
    static = {n: hashlib.sha256(f"load-token-{n}".encode()).hexdigest() for n in names}
    extra = "".join(f'[[principals]]\nname = "{n}"\nrole = "analyst"\ntoken_sha256 = "{static[n]}"\n\n'
                    f'[[grants]]\nprincipal = "{n}"\ndataset = "patients"\npurpose = "research"\n\n' for n in names)
    # [[principals]] and [[grants]] are arrays of tables: appending more after the file's own is valid TOML.
    set_config(tmp_path, extra=extra + LIMITS)
    with veil.connect("127.0.0.1:1", home=analyst_home) as offline:
        key = offline.keys[0].to_bytes()
    proc, target = start(tmp_path)
    t0 = time.monotonic()
    try:
        time.sleep(0.5)
        rss = [rss_kib(proc.pid)]
        results, reasons, accepted, lock = Counter(), Counter(), [], threading.Lock()
        for _round in range(2):
            threads = [threading.Thread(target=analyst, args=(target, f"load-token-{n}", key, i, results, reasons,
                                                              accepted, lock)) for i, n in enumerate(names)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=60)
            assert not any(th.is_alive() for th in threads), "a call was never answered"
            time.sleep(2.1)  # buckets refill between rounds
            rss.append(rss_kib(proc.pid))
        # Every acknowledged query finishes; nothing accepted is dropped under load.
        states = Counter()
        with grpc.insecure_channel(target) as ch:
            wait = ch.unary_unary("/veil.v1.QueryService/WaitQuery",
                                  request_serializer=query_pb2.WaitQueryRequest.SerializeToString,
                                  response_deserializer=query_pb2.Query.FromString)
            for token, name in accepted:
                req = query_pb2.WaitQueryRequest(name=name)
                req.timeout.FromSeconds(30)
                for _attempt in range(20):  # this caller may be rate-limited too: back off, as a client would
                    try:
                        states[query_pb2.QueryState.Name(wait(req, metadata=bearer(token), timeout=40).state)] += 1
                        break
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        time.sleep(0.4)
        elapsed = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # and a graceful stop after all that

    total = 2 * ANALYSTS * THREADS * CALLS
    assert sum(results.values()) == total  # every call answered
    assert set(results) <= {"OK", "RESOURCE_EXHAUSTED"}, results
    assert results["RESOURCE_EXHAUSTED"] > 0 and results["OK"] > 0
    assert set(reasons) <= {"RATE_LIMITED", "CONCURRENCY_LIMIT", "TOO_MANY_OPEN_QUERIES"}
    assert states == Counter({"QUERY_STATE_SUCCEEDED": len(accepted)}), states
    growth = rss[2] - rss[1]
    assert growth < 32 * 1024, rss  # KiB: the second round does not grow the node
    assert elapsed < 30
    ledger.figure("load", {"analysts": ANALYSTS, "calls": total, "answered": dict(results), "refusals": dict(reasons),
                           "queries_accepted": len(accepted), "rss_kib_start_round1_round2": rss,
                           "seconds": round(elapsed, 1)})
    ledger.record("load", "analysts", f"{ANALYSTS} analysts x {THREADS} threads, 2 rounds, tight limits: every call "
                  "answered OK or RESOURCE_EXHAUSTED, every accepted query SUCCEEDED, RSS flat", total)
