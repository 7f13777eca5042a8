"""A federation peer is pinned by its key in the format the node writes it (issue 20): the PEM of
`state/node_key.pub` pasted into `public_key`, the same as 64 hex digits, or the file itself."""

from __future__ import annotations

import pytest

from veil_server.access.node_key import NodeKey
from veil_server.config import ConfigError
from veil_server.federation.settings import parse_federation


def _federation(tmp_path, key_entry: dict):
    peers = [{"name": "south", "address": "127.0.0.1:1", **key_entry},
             {"name": "east", "address": "127.0.0.1:2", "public_key": "ab" * 32}]
    return parse_federation({"peers": peers}, base_dir=tmp_path, node_name="north", local_datasets=set(),
                            error=ConfigError)


def test_pem_hex_and_file_pin_the_same_key(tmp_path):
    key = NodeKey.load_or_create(tmp_path / "south-state")
    (tmp_path / "node_key.pub").write_bytes(key.public_key_pem)
    raw = key.public_key_bytes.hex()
    pinned = {
        "pem": _federation(tmp_path, {"public_key": key.public_key_pem.decode()}),
        "hex": _federation(tmp_path, {"public_key": raw.upper()}),
        "file": _federation(tmp_path, {"public_key_file": "node_key.pub"}),
    }
    for how, config in pinned.items():
        assert config.peer("south").public_key == raw, how


@pytest.mark.parametrize("bad", ["-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
                                 "12" * 31, "zz" * 32])
def test_a_bad_key_is_refused_naming_the_key_path(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"federation\.peers\[0\]\.public_key"):
        _federation(tmp_path, {"public_key": bad})
