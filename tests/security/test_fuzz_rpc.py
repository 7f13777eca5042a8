"""Raw protobuf bytes at every method of every service the node serves.

For each method in the service descriptors (catalog, query, audit, governance, federation, and
gRPC health), the fuzzer sends random bytes, mutated encodings of plausible requests and
well-formed requests with hostile field values, as every kind of caller (each role, no token, a
garbage token), through gRPC's generic API -- exactly what a non-Python client can send. Nothing
is stubbed: the node runs as in production, in-process on loopback.

Properties, for every single message: an answer arrives before the deadline (no hang); the
status is never INTERNAL, UNKNOWN or DATA_LOSS (bad input is the caller's error, and the node
says so); a caller without valid credentials never gets OK from a protected method (no data);
and at the end the node still serves health and real queries (no crash).
"""

from __future__ import annotations

import random
from typing import Iterator

import grpc
import pytest
from google.protobuf import descriptor as _d
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2

from veil.v1 import audit_pb2, catalog_pb2, federation_pb2, governance_pb2, query_pb2
from veil_server.access.auth import METHOD_ROLES, PEER_SIGNED, PUBLIC_PREFIXES
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import run_server

from . import ledger
from .conftest import bearer, raw_stream, raw_unary, set_config

SEED = 20261123
PER_METHOD = {"random": 24, "mutated": 24, "structured": 12}
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
             grpc.StatusCode.DEADLINE_EXCEEDED}
STRINGS = ["", "patients", "datasets/patients", "queries/00000000", "queries/../../etc/passwd", "research",
           "SELECT COUNT(*) FROM patients", "SELECT * FROM patients", "'; DROP TABLE x; --", "\u202e\u0000",
           "a" * 5000, "alice", "*", "%", "datasets/", "grants/1", "reviews/x", "🙂" * 50]


def methods() -> list[tuple[str, _d.MethodDescriptor]]:
    out = []
    for fd in (catalog_pb2.DESCRIPTOR, query_pb2.DESCRIPTOR, audit_pb2.DESCRIPTOR, governance_pb2.DESCRIPTOR,
               federation_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR):
        for svc in fd.services_by_name.values():
            for m in svc.methods:
                if not m.client_streaming:
                    out.append((f"/{svc.full_name}/{m.name}", m))
    return out


def fill(msg, rng: random.Random, depth: int = 0) -> None:
    """Plausible but hostile values for every field: names that point elsewhere, huge numbers,
    negative sizes, long strings, random bytes, nested messages."""
    for f in msg.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
        n = rng.randint(0, 3) if repeated else 1
        for _ in range(n):
            if f.type == f.TYPE_MESSAGE:
                if f.message_type.GetOptions().map_entry or depth > 2:
                    continue
                child = getattr(msg, f.name).add() if repeated else getattr(msg, f.name)
                if f.message_type.full_name == "google.protobuf.Timestamp":
                    child.seconds = rng.choice([0, -1, 2**40, rng.randint(0, 2**33)])
                elif f.message_type.full_name == "google.protobuf.Duration":
                    child.seconds = rng.choice([0, -5, 1, 3, 10**9 % 315576000000])
                else:
                    fill(child, rng, depth + 1)
                continue
            value = value_for(f, rng)
            if repeated:
                getattr(msg, f.name).append(value)
            else:
                setattr(msg, f.name, value)


def value_for(f, rng: random.Random):
    if f.type == f.TYPE_STRING:
        return rng.choice(STRINGS)
    if f.type == f.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 8, 64, 256, 512]))
    if f.type == f.TYPE_BOOL:
        return rng.random() < 0.5
    if f.type == f.TYPE_ENUM:
        return rng.choice([v.number for v in f.enum_type.values])
    if f.type in (f.TYPE_DOUBLE, f.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 1e308, float("nan"), float("inf")])
    signed = f.type in (f.TYPE_INT32, f.TYPE_INT64, f.TYPE_SINT32, f.TYPE_SINT64, f.TYPE_SFIXED32, f.TYPE_SFIXED64)
    bits = 32 if f.type in (f.TYPE_INT32, f.TYPE_UINT32, f.TYPE_SINT32, f.TYPE_FIXED32, f.TYPE_SFIXED32) else 64
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return rng.choice([lo, hi, 0, 1, -1 if signed else 2, rng.randint(lo, hi)])


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data or b"\x00")
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 2 and b:
            del b[i:i + rng.randint(1, 8)]
        elif op == 3:
            b += bytes([rng.choice([0x0A, 0x12, 0x1A, 0x22, 0x08, 0x10]), 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        else:
            b = b[: rng.randint(0, len(b))]
    return bytes(b)


def cases(method: str, m: _d.MethodDescriptor, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    cls = message_factory.GetMessageClass(m.input_type)
    for _ in range(PER_METHOD["random"]):
        yield "random", rng.randbytes(rng.choice([1, 2, 5, 17, 64, 300]))
    for _ in range(PER_METHOD["structured"] + PER_METHOD["mutated"]):
        msg = cls()
        fill(msg, rng)
        data = msg.SerializeToString()
        yield ("structured", data) if _ < PER_METHOD["structured"] else ("mutated", mutate(data, rng))


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    tokens = init_node_folder(folder, rows=2_000, disclosure="exact")
    # Limits out of the way: this test is about input handling, not admission.
    set_config(folder, extra="[limits]\nrequests_per_second = 100000\nburst = 100000\nmax_concurrent_calls = 1000\n")
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        yield tokens, running


def test_every_method_survives_fuzzed_bytes(fuzz_node, alice):
    tokens, running = fuzz_node
    rng = random.Random(SEED)
    callers = [tokens[n] for n in ("alice", "bob", "olivia", "rita", "audra", "adam")] + [None, "garbage-token"]
    stats = {"random": 0, "mutated": 0, "structured": 0}
    bad: list[str] = []
    leaked: list[str] = []
    codes: dict[str, int] = {}
    with grpc.insecure_channel(running.target) as ch:
        for method, m in methods():
            protected = not method.startswith(PUBLIC_PREFIXES) and METHOD_ROLES.get(method) is not PEER_SIGNED
            for i, (kind, data) in enumerate(cases(method, m, rng)):
                token = callers[i % len(callers)]
                try:
                    if m.server_streaming:
                        stream = raw_stream(ch, method)(data, metadata=bearer(token), timeout=10)
                        for _ in zip(range(1), stream):  # read a little, then walk away (Watch never ends)
                            pass
                        stream.cancel()
                    else:
                        raw_unary(ch, method)(data, metadata=bearer(token), timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                stats[kind] += 1
                codes[code.name] = codes.get(code.name, 0) + 1
                if code in BAD_CODES and not (code == grpc.StatusCode.CANCELLED):
                    bad.append(f"{method} {kind} -> {code.name}")
                if protected and token in (None, "garbage-token") and code == grpc.StatusCode.OK:
                    leaked.append(f"{method} {kind}")
        # Still alive and still correct.
        from grpc_health.v1 import health_pb2_grpc

        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    assert not bad, bad[:20]
    assert not leaked, leaked[:20]
    total = sum(stats.values())
    assert total >= 1000 and len(methods()) >= 30
    ledger.figure("fuzz_rpc_status_codes", codes)
    ledger.record("fuzz", "rpc-random", f"random bytes to each of {len(methods())} RPC methods, 8 kinds of caller",
                  stats["random"])
    ledger.record("fuzz", "rpc-mutated", "mutated and hostile-valued protobuf requests to every RPC method",
                  stats["mutated"] + stats["structured"])
