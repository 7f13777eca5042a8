"""The analyst's Paillier key pair, kept under ``VEIL_HOME`` (default ``~/.veil``).

The private key never leaves this folder: the node only ever sees the public modulus. Files
are written atomically with mode 0600 inside a 0700 folder, as plain JSON (no serialised Python objects).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .crypto import PrivateKey, PublicKey

SUPPORTED_BITS = (2048, 3072, 4096)


def veil_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home is not None:
        return Path(home).expanduser()
    return Path(os.environ.get("VEIL_HOME") or Path.home() / ".veil").expanduser()


class Keyring:
    """Loads the analyst's key pair for a key size, creating it on first use."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = veil_home(home)

    def path(self, bits: int) -> Path:
        return self.home / "keys" / f"paillier-{bits}.json"

    def load_or_create(self, bits: int = 2048) -> tuple[PublicKey, PrivateKey]:
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"key size must be one of {SUPPORTED_BITS}")
        from .crypto import PrivateKey, generate_keypair

        path = self.path(bits)
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            sk = PrivateKey.from_dict(data["private_key"])
            return sk.public_key, sk
        pk, sk = generate_keypair(bits=bits)
        if not self._write(path, {"format": "veil-paillier-v1", "bits": bits, "private_key": sk.to_dict()}):
            return self.load_or_create(bits)  # another process created it first: use that one
        return pk, sk

    @staticmethod
    def _write(path: Path, data: dict) -> bool:
        """Create ``path`` only if absent (a key is never overwritten); False if it existed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)
