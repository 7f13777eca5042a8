"""RFC 6962 Merkle proofs: the published vectors (positive and negative) and properties."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.audit import merkle
from veil.audit.merkle import EMPTY_ROOT, CompactRange, ProofError

VECTORS = Path(__file__).parent / "vectors"
POS = tomllib.loads((VECTORS / "rfc6962.toml").read_text())
NEG = tomllib.loads((VECTORS / "rfc6962_negative.toml").read_text())

LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in POS["tree"]["leaves"]]
ROOTS = [bytes.fromhex(r) for r in POS["tree"]["roots"]]


def h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# --- published vectors ---------------------------------------------------------------------


def test_hash_vectors() -> None:
    hashes = POS["hashes"]
    assert EMPTY_ROOT.hex() == hashes["empty_tree"] == merkle.root([]).hex()
    for case in hashes["leaf"]:
        assert merkle.leaf_hash(bytes.fromhex(case["data"])).hex() == case["hash"]
    for case in hashes["node"]:
        left, right = bytes.fromhex(case["left"]), bytes.fromhex(case["right"])
        assert merkle.node_hash(left, right).hex() == case["hash"]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == ROOTS[size - 1]
    cr = CompactRange()
    for leaf in LEAVES[:size]:
        cr.append(leaf)
    assert cr.root() == ROOTS[size - 1]


@pytest.mark.parametrize("case", POS["inclusion"], ids=lambda c: f"{c['index']}of{c['size']}")
def test_inclusion_vectors(case: dict) -> None:
    index, size, proof = case["index"], case["size"], h(case["proof"])
    assert merkle.inclusion_proof(LEAVES, index, size) == proof
    merkle.verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize("case", POS["consistency"], ids=lambda c: f"{c['old']}to{c['new']}")
def test_consistency_vectors(case: dict) -> None:
    old, new, proof = case["old"], case["new"], h(case["proof"])
    assert merkle.consistency_proof(LEAVES, old, new) == proof
    merkle.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def test_deep_inclusion_vector_from_a_production_log() -> None:
    case = POS["inclusion_deep"][0]
    merkle.verify_inclusion(
        bytes.fromhex(case["leaf_hash"]), case["index"], case["size"], h(case["proof"]),
        bytes.fromhex(case["root"]),
    )
    with pytest.raises(ProofError):
        merkle.verify_inclusion(
            bytes.fromhex(case["leaf_hash"]), case["index"] + 1, case["size"], h(case["proof"]),
            bytes.fromhex(case["root"]),
        )


@pytest.mark.parametrize("case", NEG["inclusion"], ids=lambda c: c["desc"])
def test_inclusion_negative_vectors(case: dict) -> None:
    with pytest.raises(ProofError):
        merkle.verify_inclusion(
            bytes.fromhex(case["leaf_hash"]), case["index"], case["size"], h(case["proof"]),
            bytes.fromhex(case["root"]),
        )


@pytest.mark.parametrize("case", NEG["consistency"], ids=lambda c: c["desc"])
def test_consistency_negative_vectors(case: dict) -> None:
    with pytest.raises(ProofError):
        merkle.verify_consistency(
            case["old"], case["new"], bytes.fromhex(case["old_root"]),
            bytes.fromhex(case["new_root"]), h(case["proof"]),
        )


def test_negative_vectors_cover_the_reference_corruptions() -> None:
    descs = {c["desc"].split(": ", 1)[1] for c in NEG["inclusion"] + NEG["consistency"]}
    for want in ("index + 1", "size * 2", "size / 2", "trailing garbage", "preceding root",
                 "removed component", "inserted component", "modified proof[0] bit 3",
                 "old - 1", "new / 2", "swapped roots", "empty proof", "truncated proof",
                 "preceding proof[0]", "modified proof[2] bit 4"):
        assert want in descs
    assert len(NEG["inclusion"]) + len(NEG["consistency"]) > 150


# --- edges (Veil's own choices, stricter than the RFC needs) -------------------------------

SOME = hashlib.sha256(b"some").digest()
R1, R8 = ROOTS[0], ROOTS[7]


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "ok"),
    [
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 8, EMPTY_ROOT, R8, [], True),
        (0, 8, SOME, R8, [], False),  # a size-0 tree has exactly one root
        (0, 8, EMPTY_ROOT, R8, [EMPTY_ROOT], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, R1, R1, [], True),
        (1, 1, R1, R8, [], False),
        (1, 1, R1, R1, [R1], False),
        (8, 8, R8, R8, [], True),
        (1, 0, R1, EMPTY_ROOT, [], False),  # time travel
        (8, 1, R8, R1, [], False),
        (1, 8, R1, R8, [], False),
        (1, 8, R1[:31], R8, [], False),  # wrong hash size
        (-1, 8, R1, R8, [], False),
    ],
)
def test_consistency_edges(old, new, old_root, new_root, proof, ok) -> None:
    if ok:
        merkle.verify_consistency(old, new, old_root, new_root, proof)
    else:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, proof)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1), (8, 8)])
def test_inclusion_rejects_indices_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        merkle.verify_inclusion(LEAVES[0], index, size, [], LEAVES[0])


def test_single_leaf_tree_and_bad_hash_sizes() -> None:
    merkle.verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    for leaf, root in ((b"", LEAVES[0]), (LEAVES[0], b""), (b"", b"")):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf, 0, 1, [], root)


def test_generation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES, 8, 8)
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES, 0, 9)
    with pytest.raises(ValueError):
        merkle.consistency_proof(LEAVES, 5, 4)
    with pytest.raises(TypeError):
        merkle.inclusion_proof(LEAVES, True, 8)


# --- properties ----------------------------------------------------------------------------


def leaves_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_every_proof_in_small_trees() -> None:
    """Exhaustively up to 33 leaves: every inclusion and consistency proof verifies, the
    frontier agrees with MTH, and a proof never verifies for another index or size."""
    leaves = leaves_of(33)
    cr = CompactRange()
    for n in range(1, 34):
        cr.append(leaves[n - 1])
        root = merkle.root(leaves[:n])
        assert cr.root() == root
        for i in range(n):
            proof = merkle.inclusion_proof(leaves, i, n)
            merkle.verify_inclusion(leaves[i], i, n, proof, root)
            for j in {i - 1, i + 1} & set(range(n)):
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(leaves[i], j, n, proof, root)
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(leaves, m, n)
            merkle.verify_consistency(m, n, merkle.root(leaves[:m]), root, proof)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.data())
def test_inclusion_property(size: int, data: st.DataObject) -> None:
    leaves = leaves_of(size)
    root = merkle.root(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(leaves, index, size)
    merkle.verify_inclusion(leaves[index], index, size, proof, root)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        pos = data.draw(st.integers(0, 31))
        bit = data.draw(st.integers(0, 7))
        bad = [bytearray(p) for p in proof]
        bad[k][pos] ^= 1 << bit
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, [bytes(p) for p in bad], root)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.data())
def test_consistency_property(new: int, data: st.DataObject) -> None:
    leaves = leaves_of(new)
    old = data.draw(st.integers(0, new))
    old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves)
    proof = merkle.consistency_proof(leaves, old, new)
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        pos = data.draw(st.integers(0, 31))
        bit = data.draw(st.integers(0, 7))
        bad = [bytearray(p) for p in proof]
        bad[k][pos] ^= 1 << bit
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, [bytes(p) for p in bad])
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, new_root, old_root, proof)


def test_compact_range_reports_completed_subtrees() -> None:
    leaves = leaves_of(13)
    cr = CompactRange()
    seen = {}
    for leaf in leaves:
        for level, idx, digest in cr.append(leaf):
            seen[(level, idx)] = digest
    for (level, idx), digest in seen.items():
        assert digest == merkle.root(leaves[idx << level:(idx + 1) << level])
    assert len(seen) == 13 + 6 + 3 + 1  # leaves, pairs, quads, one eight
    assert CompactRange.subtrees(13) == [(3, 0), (2, 2), (0, 12)]
    rebuilt = CompactRange(13, [seen[s] for s in CompactRange.subtrees(13)])
    assert rebuilt.root() == cr.root()
