"""Faults injected into a running node: shutdown mid-call, clients vanishing mid-query, a full
disk, a read-only state directory, an unreadable revocation list.

What must hold each time: no crash, no hang (every call ends within its bound), no INTERNAL
status, nothing released by half (a result exists exactly for SUCCEEDED queries, with its audit
entry), and nothing acknowledged lost (a query the node accepted is still there, and finishes,
after the fault and after a restart).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import veil
import veil_server.errors as veil_server_errors
from veil.v1 import catalog_pb2, query_pb2
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.state.lifecycle import QueryState
from veil_server.api.server import run_server
from veil_server.access.tokens import REVOKED_FILE

from . import ledger
from .conftest import bearer, set_config

SQL = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex"


def stubs(ch):
    return {
        "submit": ch.unary_unary("/veil.v1.QueryService/SubmitQuery",
                                 request_serializer=query_pb2.SubmitQueryRequest.SerializeToString,
                                 response_deserializer=query_pb2.Query.FromString),
        "wait": ch.unary_unary("/veil.v1.QueryService/WaitQuery",
                               request_serializer=query_pb2.WaitQueryRequest.SerializeToString,
                               response_deserializer=query_pb2.Query.FromString),
        "list": ch.unary_unary("/veil.v1.CatalogService/ListDatasets",
                               request_serializer=catalog_pb2.ListDatasetsRequest.SerializeToString,
                               response_deserializer=catalog_pb2.ListDatasetsResponse.FromString),
    }


def submit_request(key: bytes, request_id: str | None = None) -> query_pb2.SubmitQueryRequest:
    return query_pb2.SubmitQueryRequest(sql=SQL, purpose="research", request_id=request_id or str(uuid.uuid4()),
                                        public_key=query_pb2.PaillierPublicKey(n=key))


def wait_request(name: str, seconds: int) -> query_pb2.WaitQueryRequest:
    req = query_pb2.WaitQueryRequest(name=name)
    req.timeout.FromSeconds(seconds)
    return req


def no_half_released(node) -> int:
    """A stored result exists exactly for SUCCEEDED queries. Returns how many queries it checked."""
    recs = node.store.in_states(list(QueryState))
    for r in recs:
        assert (node.store.result(r.id) is not None) == (r.state is QueryState.SUCCEEDED), (r.id, r.state)
    return len(recs)


def test_graceful_shutdown(tmp_path, analyst_home):
    tokens = init_node_folder(tmp_path, rows=2_000, disclosure="exact")
    cfg = tmp_path / "veil.toml"
    cfg.write_text(cfg.read_text().replace("auto_approve = true", "auto_approve = false"))  # queries wait for review
    config = load_config(cfg, env={})
    with veil.connect("127.0.0.1:1", home=analyst_home) as offline:
        key = offline.keys[0].to_bytes()
    md = bearer(tokens["alice"])
    stack = contextlib.ExitStack()
    running = stack.enter_context(run_server(config, listen="127.0.0.1:0", grace=1.5))
    ch = grpc.insecure_channel(running.target)
    s = stubs(ch)
    pending = s["submit"](submit_request(key), metadata=md, timeout=10)
    assert pending.state == query_pb2.QUERY_STATE_PENDING_APPROVAL
    in_flight = s["wait"].future(wait_request(pending.name, 30), metadata=md, timeout=40)
    watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=20)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    time.sleep(0.3)  # the wait is now parked on the node

    stopper = threading.Thread(target=stack.close)
    stopper.start()
    seen = [next(watch).status]  # balancers learn first
    assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING]
    with grpc.insecure_channel(running.target) as fresh:  # new work is turned away, not queued
        with pytest.raises(grpc.RpcError) as e:
            stubs(fresh)["list"](catalog_pb2.ListDatasetsRequest(), metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as e:  # the in-flight call ends cleanly within the grace
        in_flight.result(timeout=10)
    assert e.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    stopper.join(timeout=60)  # a hang detector, not a timing: the grace is 1.5 s
    assert not stopper.is_alive()
    ch.close()

    with run_server(config, listen="127.0.0.1:0", grace=0.5) as again:  # acknowledged work is still there
        with grpc.insecure_channel(again.target) as ch2:
            q = stubs(ch2)["wait"](wait_request(pending.name, 0), metadata=md, timeout=10)
            assert q.state == query_pb2.QUERY_STATE_PENDING_APPROVAL
        no_half_released(again.node)
    ledger.record("fault", "shutdown", "graceful stop with a call in flight: health NOT_SERVING, new calls "
                  "UNAVAILABLE, in-flight cancelled within the grace, pending query kept across restart", 1)


def test_clients_vanishing_mid_query(demo_node, alice):
    key = alice.keys[0].to_bytes()
    md = bearer(demo_node.tokens["alice"])
    ids = [f"vanish-{uuid.uuid4()}" for _ in range(8)]
    for i, rid in enumerate(ids):
        ch = grpc.insecure_channel(demo_node.target)
        fut = stubs(ch)["submit"].future(submit_request(key, rid), metadata=md, timeout=10)
        time.sleep(0.004 * i)  # cancel at different points: before, during and after the node's work
        fut.cancel()
        ch.close()
    names = set()
    for rid in ids:  # the retry the SDK would make: the same request id is the same query, once
        names.add(alice.submit(SQL, purpose="research", request_id=rid).name)
    assert len(names) == len(ids)
    for name in list(names)[:4]:  # walk away in the middle of a wait, too
        ch = grpc.insecure_channel(demo_node.target)
        fut = stubs(ch)["wait"].future(wait_request(name, 20), metadata=md, timeout=30)
        time.sleep(0.05)
        ch.close()
        with contextlib.suppress(grpc.FutureCancelledError, grpc.RpcError):
            fut.result(timeout=5)
    for name in names:
        df = alice.wait(name, timeout=60)  # result, digest and receipt all check out
        assert int(df["n"].sum()) > 0
    checked = no_half_released(demo_node.running.node)
    assert checked >= len(ids)
    ledger.record("fault", "disconnect", "clients cancelling SubmitQuery and WaitQuery mid-call, then retrying: "
                  "one query per request id, every result whole (digest and receipt verified)", len(ids) + 4)


# -- storage ----------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave_bytes: int) -> Path:
    filler = path / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave_bytes:
                break
            try:
                f.write(chunk[: max(4096, min(len(chunk), free - leave_bytes))])
                f.flush()
            except OSError:
                break
    return filler


def code_and_reason(fn) -> tuple[str, str]:
    try:
        fn()
        return "OK", ""
    except grpc.RpcError as e:
        err = veil.errors.from_rpc_error(e)
        return e.code().name, err.reason


def test_full_disk_and_read_only_state_dir(tmp_path, analyst_home):
    tokens = init_node_folder(tmp_path / "node", rows=2_000, disclosure="exact")
    with tmpfs(tmp_path / "state", 24) as state:
        set_config(tmp_path / "node", node={"state_dir": f'"{state}"'},
                   extra="[limits]\nmin_free_bytes = 4194304\n")  # refuse new work below 4 MiB free
        config = load_config(tmp_path / "node" / "veil.toml", env={})
        with veil.connect("127.0.0.1:1", home=analyst_home) as offline:
            key = offline.keys[0].to_bytes()
        md = bearer(tokens["alice"])
        outcomes = {}
        with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
            running.guard.storage.ttl = 0.05  # re-probe quickly (the default is 1 s)
            with grpc.insecure_channel(running.target) as ch:
                s = stubs(ch)

                def submit():
                    q = s["submit"](submit_request(key), metadata=md, timeout=10)
                    assert s["wait"](wait_request(q.name, 30), metadata=md, timeout=40).state == \
                        query_pb2.QUERY_STATE_SUCCEEDED

                def read():
                    s["list"](catalog_pb2.ListDatasetsRequest(), metadata=md, timeout=10)

                def settle(fn):
                    time.sleep(0.1)
                    return code_and_reason(fn)

                outcomes["healthy: submit"] = settle(submit)
                filler = fill(state, 2 << 20)
                outcomes["low space: submit"] = settle(submit)
                outcomes["low space: read"] = settle(read)
                with open(filler, "ab") as f:  # now completely full
                    with contextlib.suppress(OSError):
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                outcomes["full: submit"] = settle(submit)
                outcomes["full: read"] = settle(read)
                running.guard.storage.min_free = 0  # no headroom rule: the write probe itself fails
                outcomes["full, no threshold: submit"] = settle(submit)
                running.guard.storage.min_free = 4 << 20
                filler.unlink()
                outcomes["space back: submit"] = settle(submit)
            checked = no_half_released(running.node)
        # A state directory that is read-only when the node starts: it refuses to start, clearly.
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        with pytest.raises(veil_server_errors.VeilError) as e:
            with run_server(config, listen="127.0.0.1:0", grace=0.5):
                pass
        outcomes["read-only at start"] = (e.value.code.name, e.value.reason)
        from veil_server.cli.refusals import start_refusal  # what `veil node serve` prints (issue 15)

        outcomes["read-only at start: line"] = start_refusal(e.value, state) or ""
        subprocess.run(["mount", "-o", "remount,rw", str(state)], check=True)
        # The state and the audit log survived all of it: the node re-verifies the whole log on start.
        with run_server(config, listen="127.0.0.1:0", grace=0.5) as again:
            assert no_half_released(again.node) == checked
            assert again.node.audit.log.tree_size > 0
            with grpc.insecure_channel(again.target) as ch:
                s = stubs(ch)
                outcomes["writable again: submit"] = code_and_reason(submit)
    assert outcomes["healthy: submit"] == ("OK", "")
    assert outcomes["low space: submit"] == ("UNAVAILABLE", "STORAGE_LOW")
    assert outcomes["low space: read"] == ("OK", "")  # reads go on while there is room for their entry
    assert outcomes["full: submit"] == ("UNAVAILABLE", "STORAGE_LOW")
    assert outcomes["full: read"][0] in ("OK", "UNAVAILABLE")  # fail closed if its entry cannot be written
    assert outcomes["full, no threshold: submit"] == ("UNAVAILABLE", "STATE_DIR_UNWRITABLE")
    assert outcomes["space back: submit"] == ("OK", "")
    assert outcomes["read-only at start"][0] == "UNAVAILABLE", outcomes
    assert "NOT_WRITABLE" in outcomes["read-only at start: line"] and "fix:" in outcomes["read-only at start: line"]
    assert outcomes["writable again: submit"] == ("OK", "")
    ledger.figure("storage_outcomes", outcomes)
    ledger.record("fault", "disk-full", "state dir on a 24 MiB tmpfs filled to 2 MiB free, then to 0: new work "
                  "refused UNAVAILABLE/STORAGE_LOW, reads fail closed, recovery when space returns, log intact", 3)
    ledger.record("fault", "state-dir-read-only", "state dir unwritable: at run time (write probe fails: "
                  "STATE_DIR_UNWRITABLE) and read-only at start (refuses to start), then recovery", 2)


def test_unreadable_revocation_list_fails_closed(tls_node):
    path = tls_node.folder / "state" / REVOKED_FILE
    backup = path.read_bytes() if path.exists() else None
    with tls_node.channel() as ch:
        s = stubs(ch)
        md = bearer(tls_node.tokens["alice"])
        s["list"](catalog_pb2.ListDatasetsRequest(), metadata=md, timeout=5)
        path.write_text('{"jti": "ok", "revoked_at": 1}\nthis is not json\n')
        assert code_and_reason(lambda: s["list"](catalog_pb2.ListDatasetsRequest(), metadata=md, timeout=5)) == \
            ("UNAVAILABLE", "REVOCATION_LIST_UNAVAILABLE")
        if backup is None:
            path.unlink()
        else:
            path.write_bytes(backup)
        s["list"](catalog_pb2.ListDatasetsRequest(), metadata=md, timeout=5)
    ledger.record("fault", "revocation-list", "corrupt revocation list: every signed token refused (fail closed) "
                  "until it is readable again", 1)


def test_free_space_is_read_before_each_call_not_on_a_timer(tmp_path):
    """Issue 15: the guard followed the disk 1-2 s late; now every check reads free space."""
    from veil_server.state.storage import StorageMonitor

    monitor = StorageMonitor(tmp_path, min_free_bytes=0, ttl=3600.0)
    monitor.check()  # healthy, and the write probe is now cached for an hour
    monitor.min_free = 1 << 62  # as if the disk filled a moment later
    with pytest.raises(veil_server_errors.VeilError) as e:
        monitor.check()
    assert e.value.reason == "STORAGE_LOW"
    monitor.min_free = 0  # space is back
    monitor.check()
