"""The chunked generator behind the 100M-row benchmark: the in-memory table's schema and ranges,
contiguous ids across row groups, reproducible from its seed, never a short file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as papq
import pytest

from veil_server.cli.demo import DIAGNOSES, REGIONS, patients_table, write_patients_parquet


def test_chunks_stream_the_same_table_shape(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    write_patients_parquet(2_500, path, chunk_rows=1_000)
    meta = papq.ParquetFile(path).metadata
    assert meta.num_rows == 2_500 and meta.num_row_groups == 3
    table = papq.read_table(path)
    assert table.schema == patients_table(10).schema
    assert table["patient_id"].to_pylist() == list(range(1, 2_501))
    assert set(table["region"].to_pylist()) <= set(REGIONS)
    assert set(table["diagnosis"].to_pylist()) <= set(DIAGNOSES)
    assert set(table["sex"].to_pylist()) == {"F", "M"}
    for column, (low, high) in {"age": (0, 110), "length_of_stay": (0, 365), "cost": (0, 500_000)}.items():
        assert low <= pc.min(table[column]).as_py() and pc.max(table[column]).as_py() <= high
    assert all(len(x) == 5 and x.isdigit() for x in table["postcode"].to_pylist())
    # Each chunk draws from its own stream: no two chunks repeat each other's rows.
    first, second = table.slice(0, 1_000), table.slice(1_000, 1_000)
    assert first["cost"].to_pylist() != second["cost"].to_pylist()


def test_reproducible_from_the_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    write_patients_parquet(1_500, a, chunk_rows=1_000)
    write_patients_parquet(1_500, b, chunk_rows=1_000)
    write_patients_parquet(1_500, c, chunk_rows=1_000, seed=7)
    assert papq.read_table(a).equals(papq.read_table(b))
    assert not papq.read_table(a).equals(papq.read_table(c))


def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import veil_server.cli.demo as demo

    calls = 0
    real = demo._admissions

    def failing(gen, *, first_id, rows):
        nonlocal calls
        calls += 1
        if calls > 2:  # the schema probe, then one chunk; the second chunk fails
            raise KeyboardInterrupt
        return real(gen, first_id=first_id, rows=rows)

    monkeypatch.setattr(demo, "_admissions", failing)
    path = tmp_path / "p.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_patients_parquet(2_000, path, chunk_rows=1_000)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial remains
