"""``veil audit list | export | checkpoint | key | verify`` and ``veil receipt get | verify``:
read, export and verify the node's audit log and the receipts of released results.

Online (connection flags): ``audit list``, ``export`` and ``checkpoint`` (auditor), ``audit key``
(any principal), ``receipt get QUERY`` (the analyst who owns the query). Offline (files only):
``audit verify`` an export and ``receipt verify`` a receipt with the node's public key (``--key``):
an auditor checks what the node handed over without trusting the node, or this machine's
network, at all. (With ``veil-server`` installed, ``audit dump`` exports the log from the node's
own files, without a running node.)

Both ``verify`` verbs exit 1 when verification fails, naming the first bad entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..audit.merkle import VerificationError
from ..audit.records import Checkpoint, Receipt, key_id, load_public_key
from ..audit.verify import verify_export, verify_receipt
from ..audit.witness import WitnessError, check_witnessed
from ..receipts import witness_policy
from ..known_nodes import KnownNodes
from ..v1 import audit_pb2
from .command import Commands
from .connection import connect
from .output import emit

VERIFY_FAILED = 1


def _read_key(path: str):
    try:
        return load_public_key(Path(path).read_bytes().strip())
    except ValueError as e:
        raise ValueError(f"{path} is not an Ed25519 public key (PEM or raw): {e}") from None


def load_checkpoint(path: str) -> Checkpoint:
    """A checkpoint kept earlier: a checkpoint JSON file, a receipt, or an export (its last one)."""
    data = Path(path).read_bytes()
    try:
        obj = json.loads(data)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "signature" in obj:
        return Checkpoint.from_json(obj)
    if isinstance(obj, dict) and isinstance(obj.get("checkpoint"), dict):
        return Checkpoint.from_json(obj["checkpoint"])  # a receipt
    for line in reversed(data.splitlines()):
        if line.startswith(b'{"checkpoint"'):
            return Checkpoint.from_json(json.loads(line))
    raise ValueError(f"{path} holds no checkpoint (expected a checkpoint, a receipt or an export)")


def cmd_list(args: argparse.Namespace, node) -> None:
    events = node.audit.events(kind=args.kind, principal=args.principal, dataset=args.dataset,
                               outcome=args.outcome, query=args.query, since=args.since, until=args.until,
                               limit=args.limit)
    if args.json:
        emit(args, events)
        return
    for e in events:
        subject = " ".join(x for x in (e.dataset and f"datasets/{e.dataset}", e.query and f"queries/{e.query}") if x)
        print(f"{e.index:>7}  {e.time}  {e.kind:<16} {e.outcome:<6} {e.principal:<12} {subject}")
        print(f"         {json.dumps(e.details, sort_keys=True)}")


def cmd_export(args: argparse.Namespace, node) -> None:
    size = node.audit.export(args.file)
    cp = load_checkpoint(args.file)
    cp.verify(node.node_key())
    emit(args, {"file": args.file, "bytes": size, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex()},
         f"wrote {args.file}: {cp.tree_size} entries, {size} bytes; signed root {cp.root_hash.hex()}\n"
         f"verify it offline: veil audit verify {args.file} --key NODE.pub")


def cmd_checkpoint(args: argparse.Namespace, node) -> None:
    cp = node.audit.checkpoint(sign_now=True)
    if args.out:
        Path(args.out).write_text(json.dumps(cp.to_json()) + "\n", encoding="utf-8")
    emit(args, cp.to_json(), f"checkpoint: {cp.tree_size} entries, root {cp.root_hash.hex()}, {cp.time}"
         + (f"; saved to {args.out}" if args.out else ""))


def cmd_key(args: argparse.Namespace, node) -> None:
    k = node._call(node._audit.GetNodeKey, audit_pb2.GetNodeKeyRequest(), retry=True)
    pinned = KnownNodes(node._home).pin(node.target, k.node_id, bytes(k.public_key))
    if pinned.public_key != bytes(k.public_key):
        raise ValueError(f"the node's key {k.key_id[:16]}… differs from the one pinned for {node.target} "
                         f"({pinned.key_id[:16]}…) in {KnownNodes(node._home).path}")
    if args.out:
        Path(args.out).write_text(k.public_key_pem, encoding="utf-8")
    emit(args, {"node_id": k.node_id, "key_id": k.key_id, "public_key_pem": k.public_key_pem},
         f"node {k.node_id}, key id {k.key_id}" + (f"; public key saved to {args.out}" if args.out else "")
         + "\ncompare the key id with the operator's over a channel you trust")


def cmd_fetch_receipt(args: argparse.Namespace, node) -> None:
    r = node.receipt(args.query)
    text = json.dumps(r.to_json())
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text if args.json or not args.out else
          f"receipt for queries/{r.query_id} (log index {r.log_index}) verified; saved to {args.out}")


def _witnessed(args: argparse.Namespace, cp, note: bytes) -> str | None:
    """The failure, if ``--witness``/``--quorum`` ask for cosignatures ``note`` lacks."""
    keys, quorum = witness_policy(args.witness or (), args.quorum)
    if quorum == 0:
        return None
    try:
        names = check_witnessed(note, cp, keys, quorum)
    except WitnessError as e:
        return f"checkpoint of {cp.tree_size} entries: {e}"
    print(f"witnessed: checkpoint of {cp.tree_size} entries cosigned by {', '.join(names)}", file=sys.stderr)
    return None


def _note_of(path: str) -> bytes:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return b""
    return str(obj.get("witness_note", "")).encode() if isinstance(obj, dict) else b""


def cmd_verify(args: argparse.Namespace) -> int:
    key = _read_key(args.key)
    old = load_checkpoint(args.checkpoint) if args.checkpoint else None
    if (args.witness or args.quorum) and old is None:
        raise ValueError("--witness needs --checkpoint: a receipt (or saved note) whose checkpoint witnesses cosigned")
    if old is not None:
        problem = _witnessed(args, old, _note_of(args.checkpoint))
        if problem is not None:
            print(f"FAILED: {problem}", file=sys.stderr)
            return VERIFY_FAILED
    report = verify_export(args.file, key, old_checkpoint=old)
    if args.json:
        emit(args, {"ok": report.ok, "tree_size": report.tree_size, "root_hash": report.root_hash.hex(),
                    "checkpoints": len(report.checkpoints), "index": report.index,
                    "problems": [asdict(p) for p in report.problems]})
    elif report.ok:
        print(f"OK: {report.tree_size} entries, {len(report.checkpoints)} signed checkpoints verified with key "
              f"{key_id(key)[:16]}…; root {report.root_hash.hex()}"
              + (f"; extends the checkpoint of {old.tree_size} entries" if old else ""))
    else:
        first = report.first
        where = f"entry {first.index}" if first.index is not None else "the export"
        print(f"FAILED at {where}: {first.code}: {first.message}", file=sys.stderr)
        for p in report.problems:
            if p is not first:
                print(f"  also: {p.code} at {p.index}: {p.message}", file=sys.stderr)
    return 0 if report.ok else VERIFY_FAILED


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    try:
        receipt = Receipt.from_json(json.loads(Path(args.file).read_text(encoding="utf-8")))
    except ValueError as e:
        print(f"FAILED: {args.file} is not a receipt: {e}", file=sys.stderr)
        return VERIFY_FAILED
    if args.key:
        key = _read_key(args.key)
    else:
        pinned = KnownNodes().by_key_id(receipt.checkpoint.key_id)
        if pinned is None:
            raise ValueError("no pinned node has the key that signed this receipt; pass --key NODE.pub")
        key = pinned.public_key
    try:
        verify_receipt(receipt, key)
    except VerificationError as e:
        print(f"FAILED: receipt for queries/{receipt.query_id}: {e}", file=sys.stderr)
        return VERIFY_FAILED
    problem = _witnessed(args, receipt.checkpoint, receipt.witness_note)
    if problem is not None:
        print(f"FAILED: receipt for queries/{receipt.query_id}: {problem}", file=sys.stderr)
        return VERIFY_FAILED
    emit(args, {"ok": True, **receipt.to_json()},
         f"OK: queries/{receipt.query_id} released result {receipt.result_digest.hex()} (plan "
         f"{receipt.query_digest.hex()[:16]}…), log entry {receipt.log_index} of a checkpoint of "
         f"{receipt.checkpoint.tree_size} signed by {receipt.checkpoint.key_id[:16]}…")
    return 0


def _witness_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness", action="append", metavar="VKEY",
                   help="a witness's verifier key (`veil witness key`); repeat for several (env VEIL_WITNESSES)")
    p.add_argument("--quorum", type=int, help="cosignatures required (default: every --witness; env "
                                              "VEIL_WITNESS_QUORUM)")


def _online(fn):
    def run(args: argparse.Namespace):
        with connect(args) as node:
            return fn(args, node)
    return run


def register(cli: Commands) -> None:
    audit = cli.noun("audit", "read, export and verify the node's audit log")
    p = audit.verb("list", _online(cmd_list), "list audit events (auditor)", connects=True)
    for flag in ("kind", "principal", "dataset", "outcome", "query"):
        p.add_argument(f"--{flag}")
    p.add_argument("--since", help="RFC 3339 UTC, e.g. 2026-01-02T03:04:05.000000Z (inclusive)")
    p.add_argument("--until", help="RFC 3339 UTC (exclusive)")
    p.add_argument("--limit", type=int, default=1000)
    audit.verb("export", _online(cmd_export), "stream the whole log to FILE as JSON Lines (auditor)",
               connects=True).add_argument("file")
    audit.verb("checkpoint", _online(cmd_checkpoint), "sign and print a checkpoint; keep it (auditor)",
               connects=True).add_argument("--out", help="also save it to this file")
    audit.verb("key", _online(cmd_key), "fetch and pin the node's public key (any principal)",
               connects=True).add_argument("--out", help="save the key (PEM) to this file")
    p = audit.verb("verify", cmd_verify, "verify an export offline with the node's public key")
    p.add_argument("file")
    p.add_argument("--key", required=True, help="the node's public key (PEM), e.g. from `veil audit key`")
    p.add_argument("--checkpoint", help="a checkpoint kept earlier (or an older export, or a receipt): "
                                        "catches truncation and rollback")
    _witness_flags(p)

    receipt = cli.noun("receipt", "the signed receipts of released results")
    p = receipt.verb("get", _online(cmd_fetch_receipt), "fetch, verify and save the receipt of your released query",
                     connects=True)
    p.add_argument("query")
    p.add_argument("--out", help="file to save the receipt (JSON) to")
    p = receipt.verb("verify", cmd_verify_receipt, "verify a saved receipt offline")
    p.add_argument("file")
    p.add_argument("--key", help="the node's public key (PEM); default: the pinned key that signed it")
    _witness_flags(p)
