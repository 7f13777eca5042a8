"""Streamed results (issue 22): the chunks a node sends reassemble to the exact result, and lost,
reordered, duplicated, truncated or substituted chunks are refused."""

from __future__ import annotations

import pytest

from veil.crypto import Ciphertext, generate_keypair
from veil.crypto.packing import PackingLayout, encrypt_packed
from veil.errors import IntegrityError
from veil.results import assemble_stream, decrypt_cells, result_digest
from veil.v1 import query_pb2
from veil_server.api.query_service import _chunks

KEY = generate_keypair(1024, insecure_test_key=True)  # small: these tests are about framing, not strength


def _result(cells: int = 50, weighted: int = 3) -> tuple[query_pb2.QueryResult, list[int]]:
    pk, _ = KEY
    layout = PackingLayout(slot_bits=40, slots=20, low=0, high=(1 << 40) - 1, terms=1, key_bits=pk.bits)
    values = list(range(1000, 1000 + cells))
    res = query_pb2.QueryResult(query="queries/q1", public_key_fingerprint=pk.fingerprint(), min_group_size=10)
    res.columns.add(name="g", kind=query_pb2.ResultColumn.KIND_GROUP_KEY)
    res.columns.add(name="n", kind=query_pb2.ResultColumn.KIND_AGGREGATE)
    for i in range(cells):
        res.rows.add(keys=[str(i)])
    res.cells.cell_count = cells
    res.cells.slot_bits = 40
    res.cells.slots_per_ciphertext = 20
    res.cells.slot_offset = "0"
    res.cells.plaintext_bits = 40 * 20
    res.cells.ciphertexts.extend(c.to_bytes() for c in encrypt_packed(pk, values, layout))
    res.weighted_cells.extend(pk.encrypt(i).to_bytes() for i in range(weighted))
    res.result_digest = result_digest(res)
    return res, values


def test_chunks_reassemble_to_the_same_bytes_and_decrypt() -> None:
    res, values = _result()
    for size in (1, 2, 3, 64):
        chunks = list(_chunks(res, size))
        seen: list[bytes] = []
        got = assemble_stream(chunks, seen.extend)
        assert got.SerializeToString(deterministic=True) == res.SerializeToString(deterministic=True)
        assert seen == list(res.cells.ciphertexts)  # handed on in order, weighted cells not among them
        _, sk = KEY
        raw = sk.decrypt_raw_many([Ciphertext.from_bytes(sk.public_key, b) for b in seen])
        assert decrypt_cells(got, sk, raw=raw) == values == decrypt_cells(got, sk)


def test_an_empty_result_is_one_chunk() -> None:
    res, _ = _result(cells=0, weighted=0)
    chunks = list(_chunks(res, 8))
    assert len(chunks) == 1 and chunks[0].last
    assert assemble_stream(chunks).SerializeToString(deterministic=True) == res.SerializeToString(deterministic=True)


@pytest.mark.parametrize("damage", ["lost", "reordered", "duplicated", "truncated", "extra", "second header",
                                    "no header", "inflated"])
def test_broken_streams_are_refused(damage: str) -> None:
    res, _ = _result()
    chunks = list(_chunks(res, 1))
    assert len(chunks) == 6
    if damage == "lost":
        del chunks[2]
    elif damage == "reordered":
        chunks[2], chunks[3] = chunks[3], chunks[2]
    elif damage == "duplicated":
        chunks.insert(3, chunks[2])
    elif damage == "truncated":
        chunks = chunks[:-1]
    elif damage == "extra":
        extra = query_pb2.QueryResultChunk(index=len(chunks), offset=0, ciphertexts=[b"\x01"], last=True)
        chunks.append(extra)
    elif damage == "second header":
        chunks[1].header.CopyFrom(chunks[0].header)
    elif damage == "no header":
        chunks[0].ClearField("header")
    elif damage == "inflated":  # a chunk with more ciphertexts than announced
        chunks[-1].ciphertexts.append(chunks[-1].ciphertexts[0])
    with pytest.raises(IntegrityError) as e:
        assemble_stream(chunks)
    assert e.value.reason == "STREAM_BROKEN"


def test_a_substituted_ciphertext_fails_the_digest() -> None:
    res, _ = _result()
    pk, sk = KEY
    chunks = list(_chunks(res, 4))
    chunks[1].ciphertexts[0] = pk.encrypt(7).to_bytes()
    got = assemble_stream(chunks)  # the framing is intact ...
    with pytest.raises(IntegrityError) as e:
        decrypt_cells(got, sk)  # ... the content is not
    assert e.value.reason == "DIGEST_MISMATCH"
