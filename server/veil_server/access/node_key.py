"""The node's Ed25519 signing key: audit checkpoints and data asset certificates are signed with it.

Kept as unencrypted PKCS#8 PEM in the node's state directory, mode 0600 in a 0700 directory:
whoever can read it can sign checkpoints in the node's name, so a key file readable by group or
others is refused rather than used. Created once, atomically: the key is written to a private
temporary file, fsynced, then hard-linked into place, so a crash never leaves a half-written key
and two processes starting together end up with the same key (the loser of the race loads the
winner's). Rotation is out of scope: a new key means a new log identity.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from veil.audit.records import key_id as _key_id

from ..errors import Internal

KEY_FILE = "node_key.pem"


class NodeKeyError(Internal):
    """The key file is missing, unreadable, not Ed25519, or readable by others."""

    default_reason = "NODE_KEY_UNUSABLE"


class NodeKey:
    """An Ed25519 private key with the public views the rest of the node needs."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_key_bytes: bytes = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_pem: bytes = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id: str = _key_id(self.public_key_bytes)
        # True only for the process that created the key file: the node logs the creation.
        self.created = False

    def __repr__(self) -> str:
        return f"NodeKey(key_id={self.key_id[:16]}…, path={self.path})"

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))

    def derived_key(self, label: bytes) -> bytes:
        """A 32-byte secret for one purpose (``label``), derived from this key with HKDF-SHA256:
        stable for the node's life, unknown to anyone without the key file."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        raw = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"veil.node-key.derived/" + label).derive(raw)

    @classmethod
    def generate(cls) -> NodeKey:
        """An in-memory key (tests, tools); a node uses :meth:`load_or_create`."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        path = Path(path)
        try:
            mode = os.stat(path).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise NodeKeyError(
                    "the node key file is readable by other users",
                    private=f"{path} has mode {stat.S_IMODE(mode):o}; chmod 600 it",
                )
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise NodeKeyError("the node key cannot be read", private=f"{path}: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise NodeKeyError("the node key file is not a PEM key", private=str(path)) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise NodeKeyError("the node key is not Ed25519", private=str(path))
        return cls(key, path)

    @classmethod
    def load_or_create(cls, state_dir: Path, filename: str = KEY_FILE) -> NodeKey:
        """Load ``state_dir/filename``; create the directory (0700) and key (0600) if absent."""
        state_dir = Path(state_dir)
        path = state_dir / filename
        if path.exists():
            return cls.load(path)
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = state_dir / f".{filename}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)  # fails if another process created the key first
                except FileExistsError:
                    return cls.load(path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            dir_fd = os.open(state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise NodeKeyError("the node key cannot be created", private=f"{path}: {exc}") from exc
        made = cls(key, path)
        made.created = True
        return made
