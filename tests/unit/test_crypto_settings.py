"""``[crypto] executor``: the local pool by default; a Dask cluster over TLS, or in development
mode over plaintext on loopback; everything else refused with the key to fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from veil_server.config import ConfigError, parse_config
from veil_server.crypto_executor import LOCAL

from .test_config import BASE


def parse(crypto: dict | None, *, dev_mode: bool = True, env: dict | None = None, base_dir: Path = Path("/tmp")):
    raw = copy.deepcopy(BASE)
    raw["node"]["dev_mode"] = dev_mode
    if crypto is not None:
        raw["crypto"] = crypto
    return parse_config(raw, base_dir=base_dir, env=env or {}).crypto


def test_local_by_default() -> None:
    assert parse(None).executor == LOCAL
    assert parse({"executor": "local"}).tls is None


def test_plaintext_dask_in_development_mode_on_loopback_only() -> None:
    settings = parse({"executor": "dask://127.0.0.1:8786", "task_timeout_seconds": 30})
    assert settings.executor == "dask://127.0.0.1:8786" and settings.task_timeout_seconds == 30
    assert parse({"executor": "dask://localhost:8786"}).executor == "dask://localhost:8786"
    with pytest.raises(ConfigError, match="plaintext dask:// is accepted only in development mode on loopback"):
        parse({"executor": "dask://127.0.0.1:8786"}, dev_mode=False)
    with pytest.raises(ConfigError, match="plaintext dask:// is accepted only"):
        parse({"executor": "dask://crypto-head:8786"})


def test_tls_cluster_needs_its_certificates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs crypto.tls_ca, crypto.tls_cert, crypto.tls_key"):
        parse({"executor": "dask+tls://crypto-head:8786"}, dev_mode=False)
    files = {"tls_ca": "ca.pem", "tls_cert": "node.pem", "tls_key": "node.key"}
    with pytest.raises(ConfigError, match="crypto.tls_ca: .*ca.pem does not exist"):
        parse({"executor": "dask+tls://crypto-head:8786", **files}, dev_mode=False, base_dir=tmp_path)
    for name in files.values():
        (tmp_path / name).write_text("PEM")
    settings = parse({"executor": "dask+tls://crypto-head:8786", **files}, dev_mode=False, base_dir=tmp_path)
    assert settings.tls is not None and settings.tls.key == tmp_path / "node.key"  # relative to the config


@pytest.mark.parametrize("executor", ["dask://crypto-head", "tcp://127.0.0.1:8786", "ray://head:10001",
                                      "dask://127.0.0.1:8786/path", "dask://user:pw@127.0.0.1:8786", ""])
def test_malformed_addresses(executor: str) -> None:
    with pytest.raises(ConfigError, match="crypto.executor must be"):
        parse({"executor": executor})


def test_environment_overrides_the_file() -> None:
    settings = parse({"executor": "local"}, env={"VEIL_CRYPTO_EXECUTOR": "dask://127.0.0.1:9000"})
    assert settings.executor == "dask://127.0.0.1:9000"


@pytest.mark.parametrize("key, value", [("connect_timeout_seconds", 0), ("task_timeout_seconds", "soon"),
                                        ("task_timeout_seconds", 10**6)])
def test_timeouts_are_bounded(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"crypto.{key} must be"):
        parse({"executor": "local", key: value})


def test_obfuscation_djn_by_default_full_on_request() -> None:
    assert parse(None).obfuscation == "djn"
    assert parse({"obfuscation": "full"}).obfuscation == "full"
    assert parse({"obfuscation": " FULL "}).obfuscation == "full"
    assert parse({"obfuscation": "djn"}, env={"VEIL_CRYPTO_OBFUSCATION": "full"}).obfuscation == "full"
    # A cluster executor keeps the setting too.
    assert parse({"executor": "dask://127.0.0.1:8786", "obfuscation": "full"}).obfuscation == "full"
    for bad in ("short", "", 3):
        with pytest.raises(ConfigError, match='crypto.obfuscation must be "djn"'):
            parse({"obfuscation": bad})
