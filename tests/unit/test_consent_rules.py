"""The consent snapshot's canonical form, and a consent dataset's declaration surviving the
registry's round trip (the config's dict form)."""

from __future__ import annotations

import hashlib
import hmac
import tomllib

from veil_server.cli.demo import dataset_toml
from veil_server.config import dataset_from_dict, dataset_to_dict
from veil_server.query.consent import ConsentSource, snapshot_digest


def test_snapshot_digest_is_the_documented_canonical_json_keyed():
    doc = b'{"format":"veil.consent.snapshot.v1","purpose":"research","subjects":["10","2","Z","z","\xc3\xa9"]}'
    key = b"k" * 32
    want = "hmac-sha256:" + hmac.new(key, doc, hashlib.sha256).hexdigest()
    # order and duplicates do not matter; ids sort by their UTF-8 bytes
    assert snapshot_digest("research", ["z", "é", "2", "10", "Z", "2"], key) == want
    assert snapshot_digest("marketing", ["z", "é", "2", "10", "Z"], key) != want
    assert snapshot_digest("research", ["z", "é", "2", "10"], key) != want
    # keyed: without the node's key the set cannot be tested (an unkeyed hash could be)
    assert snapshot_digest("research", ["z", "é", "2", "10", "Z"], b"x" * 32) != want
    assert want != "sha256:" + hashlib.sha256(doc).hexdigest()


def test_a_consent_declaration_survives_the_registry_round_trip(tmp_path):
    raw = tomllib.loads(dataset_toml("patients", str(tmp_path / "p.csv")))["datasets"][0]
    out = []
    for consent in ({"source": str(tmp_path / "c.parquet"), "subject_column": "patient_id",
                     "columns": {"subject": "person", "expires_at": "until"}},
                    {"source": str(tmp_path / "c.csv"), "subject_column": "patient_id"}):
        ds = dataset_from_dict({**raw, "basis": "consent", "consent": consent, "freshness_column": "updated_at"})
        back = dataset_from_dict(dataset_to_dict(ds))
        assert back == ds and back.consent == ds.consent and back.freshness_column == "updated_at"
        out.append(back.consent)
    assert out[0] == ConsentSource(str(tmp_path / "c.parquet"), "parquet", "patient_id", subject="person",
                                   expires_at="until")
    assert out[1] == ConsentSource(str(tmp_path / "c.csv"), "csv", "patient_id")
