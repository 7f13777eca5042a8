"""Data asset certificates verify offline, and fail on every single-byte change."""

from __future__ import annotations

import pytest

from veil.certificates import CertificateError, DatasetCertificate, verify_bytes
from veil_server.query.catalog import Column, ColumnControl, ColumnType, Dataset
from veil_server.governance.certify import check_unchanged, fingerprint, file_stamp, issue, schema_hash
from veil_server.governance.registry import DatasetRecord, Governance
from veil_server.access.node_key import NodeKey
from veil_server.errors import FailedPrecondition


@pytest.fixture()
def record(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("g,x\na,1\nb,2\n")
    ds = Dataset("d", str(src), "csv",
                 (Column("g", ColumnType.TEXT, frozenset({ColumnControl.GROUP}), categories=("a", "b")),),
                 frozenset({"research"}))
    fp = fingerprint(str(src))
    return DatasetRecord("d", 1, "UNDER_REVIEW", ("olivia",), ds, Governance("sensitive", ("holding",), False, 1),
                         "olivia", None, None, fp, file_stamp(str(src)), 0, 0)


def test_issue_and_verify(record, tmp_path):
    key = NodeKey.load_or_create(tmp_path / "keys")
    cert = issue(record, key=key, node_id="n1", row_count=2, content=record.fingerprint)
    raw = cert.to_bytes()
    back = verify_bytes(raw, key.public_key_bytes)
    assert back == cert and back.certificate_id == cert.certificate_id
    assert back.schema_hash == schema_hash(record.dataset) and back.classification == "sensitive"
    other = NodeKey.load_or_create(tmp_path / "other")
    with pytest.raises(CertificateError):
        verify_bytes(raw, other.public_key_bytes)


def test_every_single_byte_change_is_detected(record, tmp_path):
    key = NodeKey.load_or_create(tmp_path / "keys")
    raw = issue(record, key=key, node_id="n1", row_count=2, content=record.fingerprint).to_bytes()
    for i in range(len(raw)):
        for delta in (1, 0x20):
            tampered = bytearray(raw)
            tampered[i] ^= delta
            with pytest.raises((CertificateError, ValueError)):
                verify_bytes(bytes(tampered), key.public_key_bytes)


def test_data_changed_after_listing_is_detected(record):
    assert check_unchanged(record) is None
    path = record.dataset.source
    with open(path, "a") as f:
        f.write("c,3\n")
    with pytest.raises(FailedPrecondition) as e:
        check_unchanged(record)
    assert e.value.reason == "DATA_CHANGED_SINCE_LISTING"


def test_touched_but_identical_data_is_restamped(record):
    import os

    st = os.stat(record.dataset.source)
    os.utime(record.dataset.source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new_stamp = check_unchanged(record)
    assert new_stamp is not None and new_stamp != record.file_stamp


def test_format_3_signs_basis_and_quality_and_format_2_still_verifies(record, tmp_path):
    import dataclasses

    key = NodeKey.load_or_create(tmp_path / "keys")
    rec = dataclasses.replace(record, dataset=dataclasses.replace(record.dataset, basis="anonymous"))
    profile = {"rows": 2, "mode": "exact", "columns": {"g": {"missing": "0.0000", "distinct": "2-9"}}}
    cert = issue(rec, key=key, node_id="n1", row_count=2, content=rec.fingerprint, quality=profile)
    back = verify_bytes(cert.to_bytes(), key.public_key_bytes)
    assert back.version_of_format == 3 and back.basis == "anonymous" and back.quality == profile
    # the basis and the profile are signed: changing either breaks the signature
    for change in ({"basis": "consent"}, {"quality": {**profile, "rows": 3}}):
        forged = dataclasses.replace(back, **change)
        with pytest.raises(CertificateError):
            forged.verify(key.public_key_bytes)
    # a certificate of format 2 (issued before this field existed) verifies as it was signed
    old = dataclasses.replace(cert, version_of_format=2, basis="", quality={}, signature="")
    old = dataclasses.replace(old, signature=key.sign(old.signed_bytes()).hex())
    assert b'"basis"' not in old.signed_bytes()
    assert verify_bytes(old.to_bytes(), key.public_key_bytes).version_of_format == 2
