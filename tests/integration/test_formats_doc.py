"""docs/formats.md is enough to verify a receipt, an audit export and a result digest (issue 20).

The verifier below is written from docs/formats.md alone: hashlib, json, base64 and Ed25519 from
`cryptography`, raw gRPC with bytes in and out, no import of the `veil` library's audit or result
code. It runs against a real node after a real released query."""

from __future__ import annotations

import base64
import hashlib
import json

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.v1 import audit_pb2, query_pb2

SQL = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex"


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(mth(leaves[:k]), mth(leaves[k:]))


def root_from_path(leaf_hash: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def canonical(value) -> bytes:
    """The RFC 8785 subset of the doc: sorted keys, no whitespace, no floats (ASCII input here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def strip_field(message: bytes, field_number: int) -> bytes:
    """The top-level fields of a protobuf message but ``field_number``, bytes as received."""
    out, i = bytearray(), 0

    def varint(at: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            b = message[at]
            value |= (b & 0x7F) << shift
            at += 1
            if not b & 0x80:
                return value, at
            shift += 7

    while i < len(message):
        start = i
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = varint(i)
            i += length
        elif wire == 5:
            i += 4
        else:
            raise AssertionError(f"wire type {wire}")
        if key >> 3 != field_number:
            out += message[start:i]
    return bytes(out)


def raw(channel, path: str, request, token: str, stream: bool = False):
    call = (channel.unary_stream if stream else channel.unary_unary)(
        path, request_serializer=type(request).SerializeToString, response_deserializer=lambda b: b)
    return call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=120)


def test_a_receipt_an_export_and_a_result_digest_verify_from_the_doc(demo_node, alice):
    info = alice.submit(SQL, purpose="research", request_id="formats-doc-1")
    alice.wait(info.name)  # the decrypted result: the query was released
    assert alice.get(info.name).state == "SUCCEEDED"
    tokens = demo_node.tokens
    with grpc.insecure_channel(demo_node.target) as ch:
        key = audit_pb2.NodeKey.FromString(raw(ch, "/veil.v1.AuditService/GetNodeKey",
                                               audit_pb2.GetNodeKeyRequest(), tokens["audra"]))
        public = Ed25519PublicKey.from_public_bytes(key.public_key)
        assert key.key_id == hashlib.sha256(key.public_key).hexdigest()
        # The PEM's DER body ends with the raw key (how an operator pastes a peer's key as hex).
        der = base64.b64decode("".join(key.public_key_pem.strip().splitlines()[1:-1]))
        assert der[-32:] == key.public_key

        # The result digest: SHA-256 over the received QueryResult bytes without field 7.
        result_bytes = raw(ch, "/veil.v1.QueryService/GetQueryResult",
                           query_pb2.GetQueryResultRequest(name=info.name), tokens["alice"])
        digest = hashlib.sha256(strip_field(result_bytes, 7)).hexdigest()
        assert query_pb2.QueryResult.FromString(result_bytes).result_digest == digest

        # The receipt.
        receipt = audit_pb2.Receipt.FromString(raw(ch, "/veil.v1.AuditService/GetReceipt",
                                                   audit_pb2.GetReceiptRequest(name=info.name), tokens["alice"]))
        public.verify(receipt.checkpoint.signature, receipt.checkpoint.body)  # raises if forged
        body = json.loads(receipt.checkpoint.body)
        assert receipt.checkpoint.body == canonical(body) and body["type"] == "veil.audit.checkpoint"
        assert body["key_id"] == key.key_id
        entry = json.loads(receipt.entry)
        assert receipt.entry == canonical(entry)
        assert entry["index"] == receipt.log_index and entry["kind"] == "query.release" and entry["outcome"] == "ok"
        assert entry["query"] == receipt.query
        assert entry["details"]["result_digest"] == receipt.result_digest.hex() == digest
        assert entry["details"]["query_digest"] == receipt.query_digest.hex()
        assert entry["details"]["dataset_certificate"] == receipt.dataset_certificate_id
        assert root_from_path(leaf(receipt.entry), receipt.log_index, body["tree_size"],
                              list(receipt.inclusion_proof)) == bytes.fromhex(body["root_hash"])

        # The export.
        data = b"".join(chunk_data(c) for c in raw(ch, "/veil.v1.AuditService/ExportAuditLog",
                                                     audit_pb2.ExportAuditLogRequest(), tokens["audra"], stream=True))
    lines = data.split(b"\n")
    assert lines[-1] == b""  # "\n" after every line
    header = json.loads(lines[0])
    assert header["format"] == "veil.audit.export" and header["version"] == 1
    assert base64.b64decode(header["public_key"]) == key.public_key and header["key_id"] == key.key_id
    leaves, prev, checkpoints = [], "0" * 64, 0
    for line in lines[1:-1]:
        obj = json.loads(line)
        if "checkpoint" in obj:
            cp = obj["checkpoint"]
            public.verify(base64.b64decode(obj["signature"]), canonical(cp))
            assert bytes.fromhex(cp["root_hash"]) == mth(leaves[:cp["tree_size"]])
            checkpoints += 1
            continue
        assert line == canonical(obj) and obj["index"] == len(leaves) and obj["prev"] == prev
        prev = leaf(line).hex()
        leaves.append(leaf(line))
    assert len(leaves) == header["tree_size"] and checkpoints >= 1
    assert receipt.entry in lines  # the receipt's entry is one of the exported leaves


def chunk_data(chunk: bytes) -> bytes:
    return audit_pb2.ExportChunk.FromString(chunk).data
