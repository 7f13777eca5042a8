"""Typed failures of the crypto layer.

Messages name the rule that failed, never the offending value: these errors may travel back to
an analyst, and in a compute-to-data service a value in an error message is a leak.
"""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "InvalidKey",
    "InvalidCiphertext",
    "EncodingError",
    "EncodingOverflow",
]


class CryptoError(Exception):
    """Base of every error raised by ``veil.crypto``."""


class InvalidKey(CryptoError, ValueError):
    """A key (public or private) failed validation; the message names the rule."""


class InvalidCiphertext(CryptoError, ValueError):
    """Bytes or an integer that cannot be a ciphertext under the given public key."""


class EncodingError(CryptoError, ValueError):
    """A plaintext cannot be encoded (not a number, not finite, wrong type)."""


class EncodingOverflow(EncodingError, OverflowError):
    """A plaintext lies outside the range its encoding can represent without wrapping."""
