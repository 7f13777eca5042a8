"""docs/errors.md lists every ErrorInfo reason the node's code raises, and is not stale (issue 20).

The generator (docs/errors_catalogue.py) reads the syntax tree; this test checks it against a
plain text search of the source, so a reason raised in a shape the generator misses still fails
here, and against the reasons the SDK names."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"


def _generator():
    spec = importlib.util.spec_from_file_location("errors_catalogue", ROOT / "docs" / "errors_catalogue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _catalogued() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", DOC.read_text(encoding="utf-8"), re.M)
    return {reason: codes.strip() for reason, codes in rows}


def test_the_catalogue_is_up_to_date():
    gen = _generator()
    assert DOC.read_text(encoding="utf-8") == gen.render(gen.build()), "docs/errors.md is stale: run `make docs`"


def test_every_reason_in_the_source_is_catalogued():
    catalogued = _catalogued()
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "server" / "veil_server").rglob("*.py"))
    found = set(re.findall(r'\breason="([A-Z][A-Z0-9_]+)"', source))
    found |= set(re.findall(r'\bdefault_reason = "([A-Z][A-Z0-9_]+)"', source))
    # Helpers that take the reason first: reject("X", ...), deny("X", ...), _refuse("X", ...).
    found |= set(re.findall(r'\b(?:reject|deny|_refuse)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert len(found) > 100
    missing = sorted(found - set(catalogued))
    assert not missing, f"reasons raised in code but missing from docs/errors.md: {missing} (run `make docs`)"


def test_every_reason_has_a_status_code_and_the_sdk_names_only_catalogued_reasons():
    catalogued = _catalogued()
    codes = {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND", "ALREADY_EXISTS",
             "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DATA_LOSS", "INTERNAL", "ABORTED",
             "UNIMPLEMENTED", "DEADLINE_EXCEEDED", "CANCELLED", "OUT_OF_RANGE"}
    for reason, listed in catalogued.items():
        assert set(listed.split(", ")) <= codes, (reason, listed)
    from veil.errors import _REQUEST_REASONS

    assert not sorted(_REQUEST_REASONS - set(catalogued))
