"""Canonical entry bytes, signed checkpoints and receipts."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.audit import canonical, merkle
from veil.audit.canonical import NonCanonical
from veil.audit.records import (
    GENESIS_PREV,
    Checkpoint,
    Entry,
    Receipt,
    SignatureError,
    decode_entry,
    encode_entry,
    is_known_kind,
    key_id,
    release_details,
)
from veil.audit.merkle import VerificationError

T0 = "2025-03-04T05:06:07.000008Z"


# --- canonical JSON ------------------------------------------------------------------------


def test_canonical_form() -> None:
    value = {"b": [1, True, False, "x"], "a": {"z": -3, "é": "ü"}, "A": ""}
    assert canonical.encode(value) == '{"A":"","a":{"z":-3,"é":"ü"},"b":[1,true,false,"x"]}'.encode()
    assert canonical.decode(canonical.encode(value)) == value


def test_keys_sort_by_utf16_code_units_as_rfc8785() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FF21 although its code point is larger.
    value = {"\uff21": 1, "\U0001f600": 2}
    assert canonical.encode(value) == '{"\U0001f600":2,"\uff21":1}'.encode()


def test_strings_escape_as_json_stringify() -> None:
    assert canonical.encode('a"\\\n\t\x01\x7f\u2028') == b'"a\\"\\\\\\n\\t\\u0001\x7f\xe2\x80\xa8"'


@pytest.mark.parametrize(
    "value", [1.5, None, b"x", float("nan"), 2**53, -(2**53), {1: "x"}, "e\u0301", "\ud800"]
)
def test_values_outside_the_subset_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical.encode(value)


def test_integer_bounds_are_the_ijson_safe_range() -> None:
    assert canonical.encode(2**53 - 1) == b"9007199254740991"
    assert canonical.encode(-(2**53 - 1)) == b"-9007199254740991"


@pytest.mark.parametrize(
    "data",
    [
        b'{"b":1,"a":2}',  # key order
        b'{"a": 1}',  # whitespace
        b'{"a":1.0}',  # float
        b'{"a":1e3}',
        b'{"a":-0}',
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a":"\\u0041"}',  # needless escape
        '{"a":"e\u0301"}'.encode(),  # not NFC
        b'{"a":NaN}',
        b'{"a":null}',
        b"\xff",
        b'{"a":1}\n',
    ],
)
def test_decode_accepts_only_canonical_bytes(data: bytes) -> None:
    with pytest.raises(NonCanonical):
        canonical.decode(data)


def test_times() -> None:
    when = datetime(2025, 3, 4, 6, 6, 7, 8, tzinfo=timezone(timedelta(hours=1)))
    assert canonical.format_time(when) == T0
    assert canonical.parse_time(T0) == when
    for bad in ("2025-03-04T05:06:07Z", "2025-03-04T05:06:07.000008+00:00", "2025-03-04 05:06:07.000008Z"):
        with pytest.raises(ValueError):
            canonical.parse_time(bad)
    with pytest.raises(ValueError):
        canonical.format_time(datetime(2025, 1, 1))  # naive


# --- entries -------------------------------------------------------------------------------


def test_entry_bytes_are_fixed() -> None:
    e = Entry(index=3, time=T0, kind="query.reject", principal="steward", outcome="denied",
              query="q-1", details={"reason": "k < 5", "rules": ["min_group_size"]})
    assert e.to_bytes() == (
        b'{"details":{"reason":"k < 5","rules":["min_group_size"]},"index":3,"kind":"query.reject",'
        b'"outcome":"denied","prev":"' + b"0" * 64 + b'","principal":"steward","query":"q-1",'
        b'"time":"2025-03-04T05:06:07.000008Z","v":1}'
    )
    assert Entry.from_bytes(e.to_bytes()) == e
    assert e.leaf_hash() == merkle.leaf_hash(e.to_bytes())
    assert decode_entry(encode_entry(e.to_json())) == e.to_json()


def test_encode_entry_from_a_plain_dict() -> None:
    data = encode_entry({"index": 0, "time": T0, "kind": "auth.failure", "principal": "",
                         "outcome": "denied", "prev": GENESIS_PREV, "dataset": None})
    assert b'"dataset"' not in data and b'"v":1' in data


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2}, {"index": -1}, {"index": "3"}, {"time": "yesterday"}, {"kind": "Query"},
        {"outcome": "maybe"}, {"outcome": ["ok"]}, {"principal": 7}, {"dataset": True},
        {"index": True}, {"prev": "00"}, {"prev": "AB" * 32}, {"extra": 1}, {"details": {}}, {"details": [1]},
    ],
)
def test_invalid_entries_are_refused(change: dict) -> None:
    obj = {**Entry(index=3, time=T0, kind="catalog.read", principal="a", outcome="ok").to_json(),
           **change}
    with pytest.raises(NonCanonical):
        Entry.from_bytes(canonical.encode(obj))


def test_kinds() -> None:
    assert is_known_kind("query.release") and is_known_kind("admin.dataset.register")
    assert not is_known_kind("query.unknown") and not is_known_kind("admin.")


# --- checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sk() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def pub_raw(sk: Ed25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pub_pem(sk: Ed25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signed(sk: Ed25519PrivateKey, **kw: object) -> Checkpoint:
    fields = {"origin": "node-a", "tree_size": 8, "root_hash": bytes(range(32)), "time": T0,
              "key_id": key_id(pub_raw(sk)), **kw}
    cp = Checkpoint(**fields)  # type: ignore[arg-type]
    return cp.with_signature(sk.sign(cp.signed_bytes()))


def test_checkpoint_signature_with_raw_and_pem_keys(sk: Ed25519PrivateKey) -> None:
    cp = signed(sk)
    cp.verify(pub_raw(sk))
    cp.verify(pub_pem(sk))
    cp.verify(pub_pem(sk).decode())
    assert b'"type":"veil.audit.checkpoint"' in cp.signed_bytes()
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp
    assert Checkpoint.from_signed_bytes(cp.signed_bytes(), cp.signature) == cp


@pytest.mark.parametrize("field", ["origin", "tree_size", "root_hash", "time", "signature"])
def test_checkpoint_tampering_breaks_the_signature(sk: Ed25519PrivateKey, field: str) -> None:
    cp = signed(sk)
    other = {"origin": "node-b", "tree_size": 9, "root_hash": bytes(32),
             "time": "2025-03-04T05:06:07.000009Z", "signature": bytes(64)}[field]
    with pytest.raises(SignatureError):
        dataclasses.replace(cp, **{field: other}).verify(pub_raw(sk))


def test_checkpoint_from_another_key_is_refused(sk: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError):
        signed(other).verify(pub_raw(sk))
    forged = signed(other, key_id=key_id(pub_raw(sk)))
    with pytest.raises(SignatureError):
        forged.verify(pub_raw(sk))


# --- receipts ------------------------------------------------------------------------------


def make_receipt(sk: Ed25519PrivateKey) -> Receipt:
    entries, prev = [], GENESIS_PREV
    for i in range(6):
        kind = "query.release" if i == 4 else "query.submit"
        details = release_details(b"\x11" * 32, "cert-7", b"\x22" * 32) if i == 4 else {"n": i}
        e = Entry(index=i, time=T0, kind=kind, principal="alice", outcome="ok", prev=prev,
                  dataset="patients", query="q-9", details=details)
        entries.append(e.to_bytes())
        prev = e.leaf_hash()
    leaves = [merkle.leaf_hash(b) for b in entries]
    cp = signed(sk, tree_size=6, root_hash=merkle.root(leaves))
    return Receipt(query_id="q-9", query_digest=b"\x11" * 32, dataset_certificate_id="cert-7",
                   result_digest=b"\x22" * 32, log_index=4, entry=entries[4],
                   inclusion_proof=merkle.inclusion_proof(leaves, 4), checkpoint=cp)


def test_receipt_verifies_and_round_trips(sk: Ed25519PrivateKey) -> None:
    r = make_receipt(sk)
    r.verify(pub_pem(sk))
    assert Receipt.from_json(r.to_json()) == dataclasses.replace(r, inclusion_proof=list(r.inclusion_proof))


@pytest.mark.parametrize(
    "change",
    [
        {"query_id": "q-10"}, {"query_digest": b"\x12" * 32}, {"dataset_certificate_id": "cert-8"},
        {"result_digest": b"\x23" * 32}, {"log_index": 3}, {"inclusion_proof": []},
    ],
)
def test_receipt_claims_must_match_the_log(sk: Ed25519PrivateKey, change: dict) -> None:
    with pytest.raises(VerificationError):
        dataclasses.replace(make_receipt(sk), **change).verify(pub_raw(sk))


def test_receipt_with_a_forged_entry_fails(sk: Ed25519PrivateKey) -> None:
    r = make_receipt(sk)
    forged = r.entry.replace(b'"principal":"alice"', b'"principal":"bobby"')
    with pytest.raises(VerificationError):
        dataclasses.replace(r, entry=forged).verify(pub_raw(sk))
    with pytest.raises(VerificationError):
        r.verify(pub_raw(Ed25519PrivateKey.generate()))
