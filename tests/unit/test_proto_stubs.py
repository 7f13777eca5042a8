"""The committed generated code must be what `make proto` produces from the .proto files today.

The .proto files sit next to the code generated from them (``client/veil/v1/``), so the tree
mirrors the package and the wheel ships them where a non-Python client looks for them."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "client" / "veil" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", "-Iclient", f"-I{include}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}", *protos]
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert protoc.main(args) == 0
    finally:
        os.chdir(cwd)
    generated = sorted(p.name for p in (tmp_path / "veil" / "v1").iterdir())
    committed_dir = ROOT / "client" / "veil" / "v1"
    stale = [name for name in generated
             if not (committed_dir / name).exists() or not filecmp.cmp(tmp_path / "veil" / "v1" / name,
                                                                      committed_dir / name, shallow=False)]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
    extra = {p.name for p in committed_dir.glob("*_pb2*")} - set(generated)
    assert not extra, f"generated files without a .proto: {extra}"
