"""`buf lint` passes on the wire contract under buf.yaml (issue 20).

The `buf` binary comes from the buf-bin package (a dev dependency, installed next to this
Python). The test also pins the list of excepted rules, so a new exception is a reviewed change."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert found, "buf is missing: install the dev extra (`make install`, buf-bin)"
    return found


def test_buf_lint_passes():
    r = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr


def test_only_the_documented_exceptions():
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    assert config["lint"]["use"] == ["STANDARD"]
    assert sorted(config["lint"]["except"]) == ["RPC_REQUEST_RESPONSE_UNIQUE", "RPC_REQUEST_STANDARD_NAME",
                                                "RPC_RESPONSE_STANDARD_NAME"]
    assert "ignore" not in config["lint"] and "ignore_only" not in config["lint"]


def test_buf_lint_finds_a_violation(tmp_path):
    """The check can fail: a contract with a lower-case field name is refused under the same rules."""
    (tmp_path / "proto" / "veil" / "v1").mkdir(parents=True)
    (tmp_path / "proto" / "veil" / "v1" / "bad.proto").write_text(
        'syntax = "proto3";\npackage veil.v1;\nmessage Bad { string BadName = 1; }\n')
    (tmp_path / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    r = subprocess.run([_buf(), "lint", "--error-format", "json"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and '"type":"FIELD_LOWER_SNAKE_CASE"' in r.stdout, r.stdout + r.stderr
