"""Offline verification of an audit-log export, a receipt, or two checkpoints.

Export format (JSON Lines, UTF-8, one ``\\n`` after every line):

1. header: ``{"format":"veil.audit.export","version":1,"node_id":…,"public_key":<base64 raw
   Ed25519>,"key_id":<hex>,"tree_size":N}`` — informative only: the verifier trusts the key the
   caller passes, never the one in the file;
2. one line per entry, in index order: the entry's canonical bytes themselves (``records.Entry``),
   so the line *is* the Merkle leaf input;
3. checkpoint lines ``{"checkpoint":{…},"signature":<base64>}`` (``records.Checkpoint.to_json``),
   each written right after the entry that completes its tree; the last covers all N entries.

What a clean report proves: every entry is canonical, indices run 0..N-1, times never go back,
each entry's ``prev`` is the leaf hash of the one before, and every checkpoint is signed by the
key and has the root of the first ``tree_size`` entries. Given ``old_checkpoint`` (one the auditor
kept from earlier), it also proves this export extends that tree: a truncated or rolled-back log,
or one whose history was rewritten, cannot contain it.

What it cannot prove without an old checkpoint: that nothing was cut off the end, if the
checkpoints covering it were cut too. Keep the latest checkpoint you have seen.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import merkle
from .merkle import VerificationError
from .records import GENESIS_PREV, Checkpoint, Entry, Receipt, public_key_bytes

EXPORT_FORMAT = "veil.audit.export"
EXPORT_VERSION = 1

PublicKey = bytes | str | Ed25519PublicKey


@dataclass(frozen=True)
class Problem:
    """One thing wrong. ``index`` is the entry to look at, when one can be named."""

    code: str
    index: int | None
    message: str


@dataclass
class VerifyReport:
    node_id: str | None = None
    tree_size: int = 0
    root_hash: bytes = merkle.EMPTY_ROOT
    checkpoints: list[Checkpoint] = field(default_factory=list)  # those that verified
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The problem with the lowest entry index (problems without an index come last)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.index is None, p.index or 0))

    @property
    def index(self) -> int | None:
        return self.first.index if self.first else None

    @property
    def message(self) -> str:
        return self.first.message if self.first else "ok"

    def add(self, code: str, index: int | None, message: str) -> None:
        self.problems.append(Problem(code, index, message))


def _near(a: bytes, b: bytes) -> bool:
    """Whether two hashes differ in at most 8 hex digits: an edit of a stored hash, never a
    recomputed one (a fresh hash lands that close with probability below 2**-190)."""
    return sum(x != y for x, y in zip(a.hex(), b.hex(), strict=True)) <= 8


def _read_lines(source: str | os.PathLike[str] | IO[bytes]) -> list[bytes]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            data = f.read()
    else:
        data = source.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _check_entries(raw: list[bytes], leaves: list[bytes], report: VerifyReport) -> None:
    parsed: list[Entry | None] = []
    for p, line in enumerate(raw):
        try:
            parsed.append(Entry.from_bytes(line))
        except VerificationError as exc:
            parsed.append(None)
            report.add("ENTRY_MALFORMED", p, f"entry {p} is not a canonical v1 entry: {exc}")
    where: dict[int, list[int]] = {}
    for p, e in enumerate(parsed):
        if e is not None:
            where.setdefault(e.index, []).append(p)

    for p, e in enumerate(parsed):
        if e is not None and e.index != p:
            if p in where:
                report.add(
                    "ENTRY_OUT_OF_ORDER", p, f"entry {p} is not in place: line holds {e.index}"
                )
            else:
                report.add("ENTRY_MISSING", p, f"entry {p} is missing (next line holds {e.index})")

    def chain_broken(i: int) -> bool:
        """Entry i's ``prev`` differs from the leaf hash of entry i-1 (both present, unique)."""
        if i == 0 and len(where.get(0, ())) == 1:
            e = parsed[where[0][0]]
            return e is not None and e.prev != GENESIS_PREV
        if i < 1 or len(where.get(i, ())) != 1 or len(where.get(i - 1, ())) != 1:
            return False
        e = parsed[where[i][0]]
        return e is not None and e.prev != leaves[where[i - 1][0]]

    for i in sorted(where):
        if not chain_broken(i):
            continue
        # Either entry i-1 changed (only i's link breaks) or entry i's own `prev` was edited
        # (then i's bytes changed too, so i+1's link breaks, or the edit is visibly small).
        e = parsed[where[i][0]]
        assert e is not None
        before = GENESIS_PREV if i == 0 else leaves[where[i - 1][0]]
        edited = i == 0 or chain_broken(i + 1) or _near(e.prev, before)
        bad = i if edited else i - 1
        report.add("ENTRY_MODIFIED", bad, f"entry {bad} was altered: the hash chain breaks at {i}")

    last = None
    for p, e in enumerate(parsed):
        if e is None:
            continue
        if last is not None and e.time < last:
            report.add("TIME_REVERSED", p, f"entry {p} is dated before the entry preceding it")
        last = e.time


def _roots_at(leaves: Sequence[bytes], sizes: set[int]) -> dict[int, bytes]:
    roots, cr = {}, merkle.CompactRange()
    if 0 in sizes:
        roots[0] = cr.root()
    for h in leaves:
        cr.append(h)
        if cr.size in sizes:
            roots[cr.size] = cr.root()
    return roots


def verify_export(
    source: str | os.PathLike[str] | IO[bytes],
    public_key: PublicKey,
    *,
    old_checkpoint: Checkpoint | None = None,
) -> VerifyReport:
    """Verify an export file (path or binary file object) against the node's public key.

    Never raises for a bad export: every finding is in ``report.problems``, and
    ``report.index`` / ``report.message`` name the first bad entry and what is wrong with it.
    """
    report = VerifyReport()
    lines = _read_lines(source)
    if not lines:
        report.add("HEADER", None, "empty export")
        return report
    try:
        header = json.loads(lines[0])
        if header.get("format") != EXPORT_FORMAT or header.get("version") != EXPORT_VERSION:
            raise ValueError(f"not a {EXPORT_FORMAT} v{EXPORT_VERSION} file")
        report.node_id = header["node_id"]
        if base64.b64decode(header["public_key"]) != public_key_bytes(public_key):
            report.add("KEY_MISMATCH", None, "the export names a different node key")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        report.add("HEADER", None, f"bad header line: {exc}")
        return report

    raw: list[bytes] = []
    cps: list[tuple[int, Any]] = []  # (entries seen before the line, parsed JSON or error)
    for line in lines[1:]:
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "checkpoint" in obj:
            cps.append((len(raw), obj))
        else:
            raw.append(line)
    n = len(raw)
    leaves = [merkle.leaf_hash(line) for line in raw]
    report.tree_size = n
    _check_entries(raw, leaves, report)

    checkpoints: list[Checkpoint] = []
    for seen, obj in cps:
        try:
            cp = Checkpoint.from_json(obj)
            cp.verify(public_key)
        except VerificationError as exc:
            report.add("CHECKPOINT_INVALID", None, f"checkpoint after entry {seen - 1}: {exc}")
            continue
        if cp.origin != report.node_id:
            report.add("CHECKPOINT_INVALID", None, f"checkpoint is for log {cp.origin!r}")
            continue
        checkpoints.append(cp)
    sizes = {cp.tree_size for cp in checkpoints if cp.tree_size <= n} | {n}
    if old_checkpoint is not None:
        sizes.add(old_checkpoint.tree_size)
    roots = _roots_at(leaves, sizes)
    report.root_hash = roots[n]

    good, bad = 0, None  # largest matching / smallest mismatching checkpoint size
    for cp in sorted(checkpoints, key=lambda c: c.tree_size):
        if cp.tree_size > n:
            report.add(
                "TRUNCATED", n,
                f"a checkpoint signed for {cp.tree_size} entries, but the export has {n}: "
                f"entries {n}..{cp.tree_size - 1} were removed",
            )
        elif roots[cp.tree_size] != cp.root_hash:
            bad = cp.tree_size if bad is None else bad
        else:
            report.checkpoints.append(cp)
            good = max(good, cp.tree_size) if bad is None else good
    if bad is not None and not any(p.code.startswith("ENTRY") for p in report.problems):
        # The chain is intact, so either the last entry it covers changed, or entries from
        # `good` on were rewritten with the chain recomputed.
        idx = bad - 1 if bad == n else good
        report.add(
            "CHECKPOINT_MISMATCH", idx,
            f"the first {bad} entries do not have the signed root; entry {idx} was altered "
            f"(or entries {good}..{bad - 1} were rewritten)",
        )
    covered = max((cp.tree_size for cp in report.checkpoints), default=0)
    truncated = any(cp.tree_size > n for cp in checkpoints)
    if covered < n and bad is None and not truncated:
        report.add(
            "UNSIGNED_TAIL", covered,
            f"entries {covered}..{n - 1} are not covered by any signed checkpoint",
        )
    if old_checkpoint is not None:
        _check_old(old_checkpoint, public_key, n, roots, report)
    announced = header.get("tree_size")
    if isinstance(announced, int) and announced != n:  # unsigned, but a mismatch is evidence
        report.add(
            "HEADER_MISMATCH", min(n, announced),
            f"the header announces {announced} entries, the file holds {n}",
        )
    return report


def _check_old(
    old: Checkpoint, public_key: PublicKey, n: int,
    roots: dict[int, bytes], report: VerifyReport,
) -> None:
    try:
        old.verify(public_key)
    except VerificationError as exc:
        report.add("OLD_CHECKPOINT_INVALID", None, f"the checkpoint given does not verify: {exc}")
        return
    if old.origin != report.node_id:
        report.add("OLD_CHECKPOINT_INVALID", None, f"the checkpoint given is for {old.origin!r}")
    elif old.tree_size > n:
        report.add(
            "ROLLBACK", n,
            f"the node signed {old.tree_size} entries earlier, the export has {n}: "
            f"entries {n}..{old.tree_size - 1} were removed (truncation or rollback)",
        )
    elif roots[old.tree_size] != old.root_hash:
        report.add(
            "FORK", None,
            f"the first {old.tree_size} entries differ from what the node signed earlier: "
            f"history was rewritten",
        )


def verify_receipt(receipt: Receipt, public_key: PublicKey) -> None:
    """Raises a :class:`VerificationError` unless ``receipt`` is a valid, logged release."""
    receipt.verify(public_key)


def verify_checkpoint_consistency(
    old: Checkpoint, new: Checkpoint, proof: Sequence[bytes], public_key: PublicKey
) -> None:
    """For an auditor who keeps only checkpoints: both are signed by the key, name the same
    log, and ``proof`` shows ``new`` extends ``old``. Raises :class:`VerificationError`."""
    old.verify(public_key)
    new.verify(public_key)
    if old.origin != new.origin:
        raise VerificationError(
            f"checkpoints are for different logs: {old.origin!r}, {new.origin!r}"
        )
    merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)


__all__ = [
    "EXPORT_FORMAT", "EXPORT_VERSION", "Problem", "VerifyReport", "verify_export",
    "verify_receipt", "verify_checkpoint_consistency",
]
