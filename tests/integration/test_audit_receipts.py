"""Every released result comes with a signed receipt; the SDK checks it before decrypting, and
anyone holding the node's public key can check it later, offline."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path

import pytest

import veil
from veil.audit import verify_receipt
from veil.known_nodes import KnownNodes
from veil.v1 import query_pb2
from veil_server.access.node_key import NodeKey

from .audit_support import cli, online

SQL = "SELECT sex, COUNT(*) AS n, SUM(cost) AS total FROM patients GROUP BY sex"


@pytest.fixture()
def released(alice):
    info = alice.submit(SQL, purpose="research")
    alice.wait(info.name)
    return info


def node_pub(demo_node) -> bytes:
    return (demo_node.running.node.config.state_dir / "node_key.pub").read_bytes()


def test_the_sdk_pins_the_node_key_and_checks_every_result(alice, demo_node, released):
    pinned = KnownNodes().get(demo_node.target)
    assert pinned is not None and pinned.key_id == demo_node.running.node.audit.key.key_id
    receipt = alice.receipt(released.name)
    verify_receipt(receipt, node_pub(demo_node))  # what an auditor shown it would run
    result = alice._call(alice._queries.GetQueryResult, query_pb2.GetQueryResultRequest(name=released.name))
    assert receipt.query_id == released.id and receipt.result_digest.hex() == result.result_digest
    # The receipt cites the certificate the result was computed under, as the result does.
    assert receipt.dataset_certificate_id == result.certificate_id == alice.dataset("patients").certificate_id
    assert len(result.certificate_id) == 64
    assert receipt.checkpoint.tree_size > receipt.log_index


def test_a_receipt_signed_by_another_key_is_refused(demo_node, analyst_home, released):
    stranger = NodeKey.generate()
    path = Path(os.environ["VEIL_KNOWN_NODES"])
    path.write_text(f"{demo_node.target} x {stranger.key_id} "
                    f"{base64.b64encode(stranger.public_key_bytes).decode()}\n")
    with demo_node.connect("alice", analyst_home) as alice:
        with pytest.raises(veil.IntegrityError) as e:
            alice.result(released.name)
    assert e.value.reason == "RECEIPT_INVALID"
    with demo_node.connect("alice", analyst_home, node_key=stranger.public_key_pem) as alice:
        with pytest.raises(veil.IntegrityError):
            alice.wait(released.name)


def test_a_result_its_receipt_does_not_name_is_refused(alice, demo_node, released, monkeypatch):
    audit = demo_node.running.node.audit
    other = alice.submit("SELECT COUNT(*) AS n FROM patients WHERE sex = 'F' AND region = 'North'",
                         purpose="research")  # nested in an earlier cell: exact mode's tables nest
    alice.wait(other.name)
    genuine = audit.receipt
    monkeypatch.setattr(audit, "receipt", lambda qid, digest: dataclasses.replace(
        genuine(other.id, _digest(demo_node, other.id)), query_id=qid))
    with pytest.raises(veil.IntegrityError) as e:
        alice.result(released.name)
    assert e.value.reason in ("RECEIPT_INVALID", "RECEIPT_MISMATCH")
    monkeypatch.setattr(audit, "receipt", lambda qid, digest: genuine(other.id, _digest(demo_node, other.id)))
    with pytest.raises(veil.IntegrityError) as e:
        alice.result(released.name)
    assert e.value.reason == "RECEIPT_MISMATCH"
    monkeypatch.setattr(audit, "receipt", lambda qid, digest: None)  # released, never logged
    with pytest.raises(veil.IntegrityError) as e:
        alice.result(released.name)
    assert e.value.reason == "RECEIPT_MISSING"


def test_the_receipt_speaks_before_a_decryption_failure(alice, demo_node, released, monkeypatch):
    """The SDK decrypts while the receipt is in flight, but reports in the old order: a result
    the receipt does not prove is refused for that, whatever decryption made of it."""
    from veil_server.node import decode_result

    node = demo_node.running.node
    genuine = node.result

    def corrupted(principal, query_id):
        r = decode_result(genuine(principal, query_id))
        r.cells.ciphertexts[0] = bytes(len(r.cells.ciphertexts[0]))  # not a ciphertext; digest left as was
        return r.SerializeToString(deterministic=True)

    monkeypatch.setattr(node, "result", corrupted)
    with pytest.raises(veil.IntegrityError) as e:
        alice.result(released.name)
    assert e.value.reason == "RECEIPT_MISMATCH"  # not DIGEST_MISMATCH from decryption
    monkeypatch.setattr(node, "result", genuine)
    assert not alice.result(released.name).empty


def _digest(demo_node, qid: str) -> str:
    from veil_server.node import decode_result

    return decode_result(demo_node.running.node.store.result(qid)).result_digest


def test_receipts_are_for_the_owner_and_auditors_only(demo_node, released, bob, tmp_path):
    with pytest.raises(veil.NotFound):
        bob.receipt(released.name)
    with demo_node.connect("audra", tmp_path) as audra:
        assert audra.receipt(released.name).query_id == released.id
    with demo_node.connect("olivia", tmp_path) as olivia:
        with pytest.raises(veil.PermissionDenied):
            olivia.receipt(released.name)


def test_cli_saves_a_receipt_that_verifies_offline(demo_node, released, tmp_path, analyst_home, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(analyst_home))
    saved = tmp_path / "receipt.json"
    code, out, err = cli("receipt", "get", released.id, "--out", saved, *online(demo_node.running, demo_node.tokens["alice"]))
    assert code == 0 and "verified" in out, err
    pub = tmp_path / "node.pub"
    pub.write_bytes(node_pub(demo_node))
    assert cli("receipt", "verify", saved, "--key", pub)[0] == 0
    assert cli("receipt", "verify", saved)[0] == 0  # the key pinned when it was fetched
    forged = json.loads(saved.read_text())
    forged["result_digest"] = "00" * 32
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, _, err = cli("receipt", "verify", tmp_path / "forged.json", "--key", pub)
    assert code == 1 and "result_digest" in err
