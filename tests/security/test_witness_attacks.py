"""A node trying to get a witness to cosign what it must not (issue 15): a rolled-back log, a
forked log, a stale size, an unsigned or foreign checkpoint, garbage; and a receipt whose
cosignatures are forged or too few. Real logs (SQLite), a real witness over HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from veil.audit.records import Checkpoint
from veil.audit.witness import VerifierKey, WitnessError, body_of, check_witnessed, cosign, format_note, \
    parse_note, sign_note, witness_verifier
from veil_server.access.node_key import NodeKey
from veil_server.audit.events import node_id_for
from veil_server.audit.log import AuditLog
from veil_server.audit.witnessing import WitnessEndpoint, Witnesses, WitnessSettings
from veil_server.witness import serve_witness
from veil_server.witness.settings import log_key

from tests.security import ledger


def grow(log: AuditLog, n: int, tag: str) -> Checkpoint:
    for i in range(n):
        log.append("admin.test", principal="node", outcome="ok", details={"i": i, "tag": tag})
    return log.checkpoint()


def post(url: str, body: bytes) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/add-checkpoint", data=body, method="POST"),
                                    timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_witness_cosigns_only_consistent_checkpoints(tmp_path):
    key = NodeKey.load_or_create(tmp_path / "k")
    origin = node_id_for(key)
    witness = serve_witness("audit.example/w", tmp_path / "w", "127.0.0.1:0", (log_key(key.public_key_bytes),))
    vkey = witness.witness.verifier()
    settings = WitnessSettings((WitnessEndpoint(witness.url, vkey),), 1)
    outcomes = {}
    try:
        main = AuditLog(tmp_path / "main.db", key, node_id=origin)
        honest = Witnesses(main, settings)
        cp = grow(main, 5, "a")
        assert honest.submit(cp) == {vkey.name: "ok"}
        cp = grow(main, 4, "a")
        assert honest.submit(cp) == {vkey.name: "ok"}  # 5 -> 9 with a consistency proof
        outcomes["consistent growth"] = "cosigned"

        shorter = AuditLog(tmp_path / "shorter.db", key, node_id=origin)  # the same key, a rolled-back log
        rolled = grow(shorter, 5, "a")
        assert Witnesses(shorter, settings).submit(rolled)[vkey.name].startswith("conflict")
        outcomes["rolled back"] = "refused"

        other = AuditLog(tmp_path / "fork.db", key, node_id=origin)  # the same key, another history
        forked = grow(other, 12, "b")
        assert Witnesses(other, settings).submit(forked)[vkey.name].startswith("conflict")
        outcomes["forked"] = "refused"

        note = Witnesses(main, WitnessSettings()).note(main.checkpoint())
        assert post(witness.url, b"old 3\n\n" + note) == 409  # a stale size: told the witnessed one
        outcomes["stale size"] = "409"
        foreign = NodeKey.generate()
        body = body_of(cp)
        unsigned = format_note(body, [sign_note(body, origin, sign=foreign.sign, public_key=foreign.public_key_bytes)])
        assert post(witness.url, b"old 9\n\n" + unsigned) == 403
        outcomes["signed by another key"] = "403"
        stranger = NodeKey.generate()
        sbody = body_of(Checkpoint(node_id_for(stranger), 1, b"\0" * 32, "", ""))
        snote = format_note(sbody, [sign_note(sbody, node_id_for(stranger), sign=stranger.sign,
                                              public_key=stranger.public_key_bytes)])
        assert post(witness.url, b"old 0\n\n" + snote) == 404
        outcomes["unknown log"] = "404"
        assert post(witness.url, b"\xff\xfe garbage") == 400
        outcomes["garbage"] = "400"

        # The receipt side: forged or too few cosignatures are refused by the client's check.
        good = main.cosignatures(cp.tree_size)
        assert good
        note_ok = format_note(body, parse_note(body + b"\n" + good[0])[1])
        assert check_witnessed(note_ok, cp, [vkey], 1) == [vkey.name]
        forger = NodeKey.generate()
        fake = cosign(body, vkey.name, 1, sign=forger.sign, public_key=vkey.public_key)  # claims the witness's key
        with pytest.raises(WitnessError):
            check_witnessed(format_note(body, [fake]), cp, [vkey], 1)
        second = witness_verifier("elsewhere/w2", NodeKey.generate().public_key_bytes)
        with pytest.raises(WitnessError):
            check_witnessed(note_ok, cp, [vkey, second], 2)
        with pytest.raises(WitnessError):
            check_witnessed(note_ok, grow(main, 1, "a"), [vkey], 1)  # a note for another checkpoint
        outcomes["forged, too few or misplaced cosignatures"] = "refused"
        assert [r[2] for r in witness.witness.state.refusals()][:2] == ["SMALLER_THAN_WITNESSED", "INCONSISTENT"]
        for log in (main, shorter, other):
            log.close()
    finally:
        witness.close()
    ledger.figure("witness_attacks", outcomes)
    ledger.record("attack", "witness", "witness asked to cosign a rolled-back log, a forked log (same key), a stale "
                  "size, a checkpoint signed by another key, an unknown log, garbage; receipts with forged, too few "
                  "or misplaced cosignatures", 9)
