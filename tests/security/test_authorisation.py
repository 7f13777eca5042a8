"""Deny by default, isolation between principals, and hostile input at the service boundary.

* Every method, called by every role it does not list, is PERMISSION_DENIED (and without
  credentials UNAUTHENTICATED), answers no data, and leaves an ``auth.failure`` audit entry.
* A principal never sees another principal's queries, results, receipts or key fingerprints.
* Hostile SQL, forged Paillier keys and ciphertexts, oversized and over-deep messages: each is
  refused with its own status and reason; none is INTERNAL, none is recorded as a query.
"""

from __future__ import annotations

import grpc
import pytest

import veil
from veil.v1 import query_pb2
from veil_server.access.auth import METHOD_ROLES, PEER_SIGNED
from veil_server.config import load_config

from . import ledger
from .conftest import bearer, raw_stream, raw_unary
from .test_hostile_sql import HOSTILE

STREAMING = {"/veil.v1.AuditService/ExportAuditLog"}


def call_raw(ch, method: str, token: str | None, data: bytes = b""):
    if method in STREAMING:
        return list(raw_stream(ch, method)(data, metadata=bearer(token), timeout=10))
    return raw_unary(ch, method)(data, metadata=bearer(token), timeout=10)


def test_every_role_is_refused_every_method_it_is_not_granted(demo_node):
    config = load_config(demo_node.folder / "veil.toml", env={})
    roles = {p.name: p.role for p in config.principals}
    log = demo_node.running.node.audit.log
    start = log.tree_size
    attempts = 0
    with grpc.insecure_channel(demo_node.target) as ch:
        for method, allowed in sorted(METHOD_ROLES.items()):
            if allowed is PEER_SIGNED:
                continue
            for who, role in sorted(roles.items()):
                if role in allowed:
                    continue
                with pytest.raises(grpc.RpcError) as e:
                    call_raw(ch, method, demo_node.tokens[who])
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, who)
                attempts += 1
            with pytest.raises(grpc.RpcError) as e:
                call_raw(ch, method, None)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            attempts += 1
    denials = [e for e in log.entries(start) if e.kind == "auth.failure"]
    assert len(denials) == attempts  # every refusal is logged, one entry each
    assert attempts >= 50
    ledger.record("attack", "roles", "every RPC called by every role it does not grant, and without credentials",
                  attempts)


def test_principals_are_isolated(alice, bob, demo_node):
    info = alice.submit("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research")
    alice.wait(info.name, timeout=60)
    attempts = 0
    probes = [("get", lambda q: bob.get(q)), ("cancel", lambda q: bob.cancel(q)), ("result", lambda q: bob.result(q)),
              ("receipt", lambda q: bob.receipt(q, verify=False)), ("wait", lambda q: bob.wait(q, timeout=1))]
    fake = "0123456789abcdef"
    for name, probe in probes:
        with pytest.raises(veil.VeilError) as absent:
            probe(fake)
        for ref in (info.name, info.id, f"queries/{info.id}/../{info.id}", info.id.upper()):
            with pytest.raises(veil.VeilError) as e:
                probe(ref)
            assert e.value.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (name, ref)
            # Indistinguishable from an id that does not exist: the refusal confirms nothing.
            assert (e.value.code, e.value.reason) == (absent.value.code, absent.value.reason), (name, ref)
            attempts += 1
    assert info.name not in {q.name for q in bob.queries(limit=10_000)}
    attempts += 1
    # The owner sees the query (to approve it) but never its result: results are analyst-only.
    with grpc.insecure_channel(demo_node.target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            raw_unary(ch, "/veil.v1.QueryService/GetQueryResult")(
                query_pb2.GetQueryResultRequest(name=info.name).SerializeToString(),
                metadata=bearer(demo_node.tokens["olivia"]), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        attempts += 1
    ledger.record("attack", "isolation", "another analyst's query ids (5 calls x 4 spellings), listing, owner "
                  "reading a result", attempts)


def test_hostile_sql_over_grpc(alice):
    refused = 0
    before = len(alice.queries(limit=10_000))
    for sql, code, _ in HOSTILE:
        if code is None:
            continue
        with pytest.raises(veil.VeilError) as e:
            alice.submit(sql, purpose="research")
        assert e.value.code == code and e.value.code != grpc.StatusCode.INTERNAL
        refused += 1
    assert len(alice.queries(limit=10_000)) == before
    ledger.record("attack", "hostile-sql", "hostile SQL (injection, DDL, hidden columns, joins, subqueries, "
                  "oversize, control characters) through SubmitQuery", refused)


def _submit(ch, token: str, key: bytes, weighted=()):
    req = query_pb2.SubmitQueryRequest(sql="SELECT region, COUNT(*) FROM patients GROUP BY region",
                                       purpose="research", request_id="paillier-attack",
                                       public_key=query_pb2.PaillierPublicKey(n=key), weighted_sums=list(weighted))
    return raw_unary(ch, "/veil.v1.QueryService/SubmitQuery")(req.SerializeToString(), metadata=bearer(token),
                                                             timeout=10)


def test_forged_paillier_keys_and_ciphertexts(alice, demo_node):
    pk = alice.keys[0]
    n = pk.n
    width = (n.bit_length() + 7) // 8
    big_prime_ish = (1 << 2047) + 1  # composite or prime, small factors included: refused either way
    keys = {
        "empty": b"", "one byte": b"\x01", "1024-bit": (3 << 1022 | 1).to_bytes(128, "big"),
        "even modulus": (n + 1).to_bytes(width, "big"), "small factor": (n * 3).to_bytes(width + 1, "big"),
        "perfect square": ((1 << 1100) + 1).__pow__(2).to_bytes(276, "big"), "leading zero": b"\x00" + pk.to_bytes(),
        "too long": (1 << 20000 | 1).to_bytes(2501, "big"), "power of two plus one": big_prime_ish.to_bytes(256, "big"),
        "all ones": b"\xff" * 256,
    }
    n2 = n * n
    cipher_width = 2 * width
    weights = {
        "zero": (0).to_bytes(cipher_width, "big"), "n squared": n2.to_bytes(cipher_width + 1, "big"),
        "above n squared": (n2 + 5).to_bytes(cipher_width + 1, "big"), "multiple of n": n.to_bytes(cipher_width, "big"),
        "short": b"\x01\x02", "empty": b"",
    }
    attempts = 0
    with grpc.insecure_channel(demo_node.target) as ch:
        for label, key in keys.items():
            with pytest.raises(grpc.RpcError) as e:
                _submit(ch, demo_node.tokens["alice"], key)
            err = veil.errors.from_rpc_error(e.value)
            assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PUBLIC_KEY"), label
            attempts += 1
        for label, w in weights.items():
            ws = query_pb2.WeightedSum(key_column="sex", value_columns=["cost"], weights=[w, w])
            with pytest.raises(grpc.RpcError) as e:
                _submit(ch, demo_node.tokens["alice"], pk.to_bytes(), [ws])
            err = veil.errors.from_rpc_error(e.value)
            assert err.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED), label
            assert err.code != grpc.StatusCode.INTERNAL
            attempts += 1
    ledger.record("attack", "paillier-input", "forged Paillier keys (short, even, square, small factors, huge) and "
                  "ciphertexts (0, n, n^2, out of range)", attempts)


def test_oversize_and_overdeep_messages(demo_node):
    token = demo_node.tokens["alice"]
    outcomes = {}
    with grpc.insecure_channel(demo_node.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        submit = raw_unary(ch, "/veil.v1.QueryService/SubmitQuery")
        big = query_pb2.SubmitQueryRequest(sql="x" * (17 << 20)).SerializeToString()
        with pytest.raises(grpc.RpcError) as e:
            submit(big, metadata=bearer(token), timeout=20)
        outcomes["17 MiB request"] = e.value.code()
        with pytest.raises(grpc.RpcError) as e:
            submit(b"", metadata=[("authorization", "Bearer " + "a" * 40_000)], timeout=10)
        outcomes["40 KB metadata"] = e.value.code()
        # 200 nested messages: past protobuf's recursion limit, so the bytes do not parse.
        deep = b""
        for _ in range(200):
            deep = b"\x2a" + bytes([len(deep)]) + deep if len(deep) < 128 else b"\x2a" + _varint(len(deep)) + deep
        with pytest.raises(grpc.RpcError) as e:
            submit(deep, metadata=bearer(token), timeout=10)
        outcomes["nesting 200 deep"] = e.value.code()
        with pytest.raises(grpc.RpcError) as e:
            submit(b"\x0a\xff\xff\xff\xff\x0f", metadata=bearer(token), timeout=10)  # a length past the end
        outcomes["truncated length"] = e.value.code()
    assert outcomes == {"17 MiB request": grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "40 KB metadata": outcomes["40 KB metadata"],
                        "nesting 200 deep": grpc.StatusCode.INVALID_ARGUMENT,
                        "truncated length": grpc.StatusCode.INVALID_ARGUMENT}
    assert outcomes["40 KB metadata"] not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    ledger.record("attack", "oversize", "oversized request and metadata, over-deep nesting, truncated length",
                  len(outcomes))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
