"""Merkle-tree hashing and proofs for the audit log (RFC 6962 §2.1, verified per RFC 9162 §2.1).

Auditors run this module offline; it depends on nothing but ``hashlib``.

* leaf hash  ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left || right)``: the
  prefixes keep a leaf from ever being passed off as an inner node (second-preimage attack).
* ``root`` is MTH (RFC 6962 §2.1); ``inclusion_proof`` is PATH (§2.1.1) and
  ``consistency_proof`` is PROOF/SUBPROOF (§2.1.2). They take *leaf hashes*, not entries.
* ``verify_inclusion`` and ``verify_consistency`` follow RFC 9162 §2.1.3.2 and §2.1.4.2. They
  return ``None`` on success and raise :class:`ProofError` (a ``ValueError``) naming what is wrong:
  an index outside the tree, sizes in the wrong order, a proof of the wrong length, a hash of the
  wrong size, or a root that does not match. They never return ``False``: a caller that forgets
  to look at a return value must not accept a forged proof.
* :class:`CompactRange` is the log's frontier: the roots of the perfect subtrees that make up a
  tree of any size, so that appending is O(log n) and the root is always at hand.

A tree of size 0 has root ``SHA-256("")`` (:data:`EMPTY_ROOT`); it is consistent with every tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``f(start, end)`` returns MTH of the leaves ``[start, end)``; proof generation is written
against this so the server can answer from stored subtree hashes instead of rehashing leaves."""


class VerificationError(ValueError):
    """Something an auditor checks did not hold (a proof, a signature, an entry)."""


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof does not verify."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(entry)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + bytes(left) + bytes(right)).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 6962's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_proof_size(name: str, value: object) -> int:
    """Like ``_check_size`` but a negative size is a bad proof, not a programming error."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} {value} is negative")
    return value


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ProofError(f"{name} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes; a SHA-256 hash is {HASH_SIZE}")
    return value


def _list_subtree(leaves: Sequence[bytes]) -> SubtreeHash:
    def subtree(start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return bytes(leaves[start])
        k = _split(n)
        return node_hash(subtree(start, start + k), subtree(start + k, end))

    return subtree


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes (RFC 6962 §2.1); ``EMPTY_ROOT`` for an empty list."""
    return _list_subtree(leaves)(0, len(leaves))


# --- proof generation ------------------------------------------------------------------------


def inclusion_proof_from(subtree: SubtreeHash, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) using ``subtree(start, end)`` for subtree hashes."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()  # PATH lists siblings from the leaf up
    return path


def consistency_proof_from(subtree: SubtreeHash, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[new]) using ``subtree(start, end)`` for subtree hashes.

    Empty when ``old == 0`` or ``old == new`` (those trees are consistent by definition).
    """
    _check_size("old", old)
    _check_size("new", new)
    if old > new:
        raise ValueError(f"old size {old} is larger than new size {new}")
    if old == 0 or old == new:
        return []
    proof: list[bytes] = []
    # SUBPROOF(m, D[start:end], b), unrolled: each step records the sibling it descends past.
    start, end, m, whole = 0, new, old, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """PATH(index, D[size]) over ``leaves`` (leaf hashes); ``size`` defaults to ``len(leaves)``."""
    size = len(leaves) if size is None else _check_size("size", size)
    if size > len(leaves):
        raise ValueError(f"size {size} exceeds the {len(leaves)} leaves given")
    return inclusion_proof_from(_list_subtree(leaves), index, size)


def consistency_proof(leaves: Sequence[bytes], old: int, new: int | None = None) -> list[bytes]:
    """PROOF(old, D[new]) over ``leaves`` (leaf hashes); ``new`` defaults to ``len(leaves)``."""
    new = len(leaves) if new is None else _check_size("new", new)
    if new > len(leaves):
        raise ValueError(f"new size {new} exceeds the {len(leaves)} leaves given")
    return consistency_proof_from(_list_subtree(leaves), old, new)


# --- verification (RFC 9162) -----------------------------------------------------------------


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash`` at ``index`` (RFC 9162 §2.1.3.2, 1-4)."""
    _check_proof_size("index", index)
    _check_proof_size("size", size)
    if index >= size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    r = _check_hash("leaf hash", leaf_hash)
    fn, sn = index, size - 1
    for i, p in enumerate(proof):
        p = _check_hash(f"proof[{i}]", p)
        if sn == 0:
            raise ProofError(f"proof has {len(proof)} hashes; too many for index {index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"proof has {len(proof)} hashes; too few for index {index} of {size}")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises :class:`ProofError` if it is not (or the arguments cannot describe such a leaf).
    """
    expected = _check_hash("root", root)
    if root_from_inclusion_proof(leaf_hash, index, size, proof) != expected:
        raise ProofError(f"inclusion proof for index {index} of {size} does not match the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (``old_size``, ``old_root``) is a prefix of (``new_size``, ``new_root``).

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. The edges, stricter than the RFC needs:
    ``old_size == new_size`` needs an empty proof and equal roots; ``old_size == 0`` needs an
    empty proof and ``old_root == EMPTY_ROOT``. Raises :class:`ProofError` otherwise.
    """
    _check_proof_size("old_size", old_size)
    _check_proof_size("new_size", new_size)
    old_root = _check_hash("old root", old_root)
    new_root = _check_hash("new root", new_root)
    proof = [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size} (rollback?)")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError(f"a proof from size {old_size} to {new_size} must be empty")
        want = EMPTY_ROOT if old_size == 0 else new_root
        if old_root != want:
            raise ProofError(f"old root does not match the tree of size {old_size}")
        return
    if not proof:
        raise ProofError(f"empty proof from size {old_size} to {new_size}")
    if old_size & (old_size - 1) == 0:  # step 1: the old tree is a whole subtree of the new
        proof = [old_root, *proof]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not match the root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not match the root of size {new_size}")


# --- the frontier ----------------------------------------------------------------------------


class CompactRange:
    """The roots of the perfect subtrees covering leaves ``[0, size)``, largest first.

    ``append`` returns every perfect subtree it completes as ``(level, index, hash)`` (level 0 is
    the leaf itself, ``index`` counts subtrees of that level from the left), which is what a store
    keeps so proofs are answered without rehashing leaves.
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        _check_size("size", size)
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a range of size {size} has {bin(size).count('1')} subtree roots")
        self._size = size
        self._hashes = [_check_hash("subtree root", h) for h in hashes]

    @staticmethod
    def subtrees(size: int) -> list[tuple[int, int]]:
        """``(level, index)`` of each perfect subtree of the frontier of ``size``, largest first."""
        out, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                out.append((level, start >> level))
                start += 1 << level
        return out

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        h = _check_hash("leaf hash", leaf)
        created = [(0, self._size, h)]
        level, n = 0, self._size
        while n & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            n >>= 1
            created.append((level, n, h))
        self._hashes.append(h)
        self._size += 1
        return created

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r
