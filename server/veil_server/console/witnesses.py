"""Witness cosignatures of a checkpoint, for the checkpoint history page.

A witness (another party that keeps the log's checkpoints and refuses to cosign a history that
forks or shrinks) turns "the node signed this root" into "the node and N independent parties saw
this root". The node returns each checkpoint's C2SP signed note with the ``cosignature/v1`` lines
it holds (``Checkpoint.witness_note``, issue 15's witnesses); :func:`cosignatures` reads them and
checks each against the witness keys pinned in the node's ``[witness]`` config. A line from a key
that is not pinned, or that does not verify, is shown as not verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from veil.audit.witness import ALG_COSIGNATURE_V1, VerifierKey, WitnessError, body_of, parse_note


@dataclass(frozen=True)
class Cosignature:
    witness: str  # the witness's name, as pinned in the node's config
    key_id: str
    time: str
    verified: bool


def cosignatures(checkpoint: Any, pinned: Sequence[VerifierKey] = ()) -> list[Cosignature]:
    """The witnesses' cosignatures on ``checkpoint`` (an ``audit_pb2.Checkpoint``), each checked
    against ``pinned``; the node's own signature line is not one of them."""
    note = bytes(getattr(checkpoint, "witness_note", b"") or b"")
    if not note:
        return []
    try:
        body, sigs = parse_note(note)
    except (WitnessError, ValueError):
        return []
    from veil.audit import Checkpoint

    try:
        cp = Checkpoint.from_signed_bytes(checkpoint.body, checkpoint.signature)
        same = body == body_of(cp)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint: nothing it carries is verified
        same = False
    out = []
    for sig in sigs:
        if sig.name == checkpoint.origin:
            continue  # the node's own signature over the note
        key = next((k for k in pinned if k.alg == ALG_COSIGNATURE_V1 and k.name == sig.name
                    and k.key_id == sig.key_id), None)
        when, ok = "", False
        if key is not None and same:
            try:
                t = key.verify(body, sig)
                ok = t is not None
                when = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else ""
            except WitnessError:
                ok = False
        out.append(Cosignature(sig.name, sig.key_id.hex(), when, ok))
    return out
