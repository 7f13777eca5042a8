"""Witnessed checkpoints (issue 15): two real nodes and one `veil witness`, over real sockets.

Node A is witnessed by its peer node B (``[witness] serve`` following A's key) and by a
standalone witness W. A rolled back whole (audit.db and state.db restored together, so the
two files still agree with each other) or forked is refused by the witnesses, and then by A's
own start; the SDK refuses a receipt without its quorum of pinned witnesses.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import urllib.request

import pytest

import veil
from veil.audit.witness import VerifierKey, check_witnessed, witness_verifier
from veil_server.access.node_key import NodeKey
from veil_server.api.server import run_server
from veil_server.audit.anchoring import StartRefused
from veil_server.audit.events import node_id_for
from veil_server.cli.demo import init_node_folder
from veil_server.config import load_config
from veil_server.node import Node
from veil_server.witness import serve_witness
from veil_server.witness.settings import log_key

SQL = "SELECT region, COUNT(*) AS n FROM patients GROUP BY region"


def add_section(folder, text: str) -> None:
    cfg = folder / "veil.toml"
    cfg.write_text(cfg.read_text() + "\n" + text)


@pytest.fixture()
def world(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tokens = init_node_folder(a, rows=2_000, disclosure="dp")
    init_node_folder(b, rows=500, disclosure="dp")
    a_key = NodeKey.load_or_create(load_config(a / "veil.toml", env={}).state_dir)
    b_key = NodeKey.load_or_create(load_config(b / "veil.toml", env={}).state_dir)
    add_section(b, f'[witness]\nserve = "127.0.0.1:0"\nfollow = ["{a_key.public_key_bytes.hex()}"]\n')
    w = serve_witness("audit.example/w1", tmp_path / "w" / "state", "127.0.0.1:0", (log_key(a_key.public_key_bytes),))
    with run_server(load_config(b / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as node_b:
        b_vkey = witness_verifier(f"{node_id_for(b_key)}/witness", b_key.public_key_bytes)
        w_vkey = w.witness.verifier()
        add_section(a, "[witness]\nquorum = 2\n"
                       f'[[witness.witnesses]]\nurl = "{node_b.witness.url}"\nkey = "{b_vkey.text()}"\n'
                       f'[[witness.witnesses]]\nurl = "{w.url}"\nkey = "{w_vkey.text()}"\n')
        yield {"a": a, "tokens": tokens, "b_vkey": b_vkey, "w_vkey": w_vkey, "w": w, "b": node_b}
    w.close()


def release(folder, tokens, home, **kw):
    config = load_config(folder / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=home, **kw) as alice:
            info = alice.submit(SQL, purpose="research")
            alice.wait(info.name)
            return alice.receipt(info.name, verify=False), running.node.audit.log.tree_size


def test_receipts_carry_a_quorum_of_cosignatures_and_the_sdk_checks_them(world, analyst_home):
    keys = [world["b_vkey"].text(), world["w_vkey"].text()]
    receipt, _ = release(world["a"], world["tokens"], analyst_home, witnesses=keys)
    assert sorted(check_witnessed(receipt.witness_note, receipt.checkpoint,
                                  [VerifierKey.parse(k) for k in keys], 2)) == sorted(
        [world["b_vkey"].name, world["w_vkey"].name])
    # An analyst who pins a third witness and asks for all three refuses the result.
    other = witness_verifier("elsewhere/w9", NodeKey.generate().public_key_bytes).text()
    with pytest.raises(veil.IntegrityError) as e:
        release(world["a"], world["tokens"], analyst_home, witnesses=[*keys, other], witness_quorum=3)
    assert e.value.reason == "WITNESS_QUORUM_NOT_MET"


def test_a_rolled_back_node_is_refused_by_its_witnesses_and_does_not_start(world, analyst_home, tmp_path):
    config = load_config(world["a"] / "veil.toml", env={})
    Node(config).close()  # witnessed once
    backup = tmp_path / "backup"
    shutil.copytree(config.state_dir, backup)
    release(world["a"], world["tokens"], analyst_home)  # the witnesses now hold a longer log
    shutil.rmtree(config.state_dir)
    shutil.copytree(backup, config.state_dir)  # both files rolled back together: they agree
    with pytest.raises(StartRefused) as e:
        Node(config).close()
    assert e.value.problem == "LOG_ROLLED_BACK_WITNESSED"
    refusals = world["w"].witness.state.refusals()
    assert refusals and refusals[-1][2] == "SMALLER_THAN_WITNESSED"


def test_a_forked_log_is_refused_a_cosignature(world, analyst_home, tmp_path):
    config = load_config(world["a"] / "veil.toml", env={})
    Node(config).close()
    backup = tmp_path / "backup"
    shutil.copytree(config.state_dir, backup)
    release(world["a"], world["tokens"], analyst_home)
    shutil.rmtree(config.state_dir)
    shutil.copytree(backup, config.state_dir)
    # Another history from the same point, written while no witness was asked, longer than the
    # witnessed one: a fork. Its checkpoints are then sent to the witnesses.
    quiet = dataclasses.replace(config, witness=None)
    for _ in range(3):
        Node(quiet).close()
    with pytest.raises(StartRefused) as e:
        Node(config).close()
    assert e.value.problem == "LOG_ROLLED_BACK_WITNESSED"
    assert any(r[2] == "INCONSISTENT" for r in world["w"].witness.state.refusals())


def test_witness_refuses_malformed_unknown_and_unsigned_requests(world):
    url = world["w"].url + "/add-checkpoint"

    def post(body: bytes) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post(b"nonsense") == 400
    assert post(b"old 0\n\nveil-unknown\n1\n" + b"A" * 43 + b"=\n\n\xe2\x80\x94 x AAAAAAA=\n") == 404
    origin = log_key(NodeKey.load_or_create(load_config(world["a"] / "veil.toml", env={}).state_dir)
                     .public_key_bytes).name
    forged = f"old 0\n\n{origin}\n1\n{'A' * 43}=\n\n\u2014 {origin} AAAAAAAAAAAA\n".encode()
    assert post(forged) == 403


def test_witness_cli_init_key_and_serve(tmp_path):
    veil_cmd = [sys.executable, "-m", "veil_server.cli"]
    out = subprocess.run([*veil_cmd, "witness", "init", str(tmp_path / "w"), "--name", "audit.example/w2",
                          "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = subprocess.run([*veil_cmd, "witness", "key", "--config", str(tmp_path / "w" / "witness.toml")],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert VerifierKey.parse(key).name == "audit.example/w2"
    assert (tmp_path / "w" / "state" / "node_key.pem").stat().st_mode & 0o077 == 0


def test_audit_verify_checks_the_witness_quorum_offline(world, analyst_home, tmp_path):
    import json

    keys = [world["b_vkey"].text(), world["w_vkey"].text()]
    receipt, _ = release(world["a"], world["tokens"], analyst_home, witnesses=keys)
    saved = tmp_path / "receipt.json"
    saved.write_text(json.dumps(receipt.to_json()))
    pub = load_config(world["a"] / "veil.toml", env={}).state_dir / "node_key.pub"
    veil_cmd = [sys.executable, "-m", "veil_server.cli", "audit", "receipt", str(saved), "--key", str(pub)]
    ok = subprocess.run([*veil_cmd, "--witness", keys[0], "--witness", keys[1]], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    other = witness_verifier("elsewhere/w9", NodeKey.generate().public_key_bytes).text()
    bad = subprocess.run([*veil_cmd, "--witness", keys[0], "--witness", other, "--quorum", "2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "1 of the pinned witnesses cosigned" in bad.stderr


def test_checkpoints_carry_their_cosignatures_and_the_console_checks_them(world, analyst_home):
    """Issue 19's checkpoint history: ListCheckpoints returns each checkpoint's signed note with the
    cosignatures the node holds; the console's reader verifies them against the pinned keys and
    marks a line from an unpinned key, or a note for another checkpoint, as not verified."""
    from veil.v1 import audit_pb2, audit_pb2_grpc
    from veil_server.console.witnesses import cosignatures

    config = load_config(world["a"] / "veil.toml", env={})
    pinned = [world["b_vkey"], world["w_vkey"]]
    with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=world["tokens"]["alice"], home=analyst_home,
                          witnesses=[k.text() for k in pinned]) as alice:
            info = alice.submit(SQL, purpose="research")
            alice.wait(info.name)
            receipt = alice.receipt(info.name)  # cosigned by both (the SDK checks the quorum)
        with veil.connect(running.target, token=world["tokens"]["audra"], home=analyst_home) as audra:
            stub = audit_pb2_grpc.AuditServiceStub(audra._channel)
            cps = stub.ListCheckpoints(audit_pb2.ListCheckpointsRequest(page_size=100),
                                       metadata=audra._metadata()).checkpoints
    cp = next(c for c in cps if c.tree_size == receipt.checkpoint.tree_size)
    seen = cosignatures(cp, pinned)
    assert sorted(s.witness for s in seen if s.verified) == sorted(k.name for k in pinned)
    assert all(s.time for s in seen)
    assert not any(s.verified for s in cosignatures(cp, []))  # nothing pinned: shown, not verified
    other = next(c for c in cps if c.tree_size != cp.tree_size)
    forged = audit_pb2.Checkpoint()
    forged.CopyFrom(other)
    forged.witness_note = cp.witness_note  # cosignatures of another checkpoint
    assert not any(s.verified for s in cosignatures(forged, pinned))
