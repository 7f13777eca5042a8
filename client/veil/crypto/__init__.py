"""Veil's crypto layer: Paillier (with DJN fast randomness, packing, multi-exponentiation),
fixed-point encoding and additive secret sharing.

Each module opens with its security basis and what each party learns. Nothing here knows about
gRPC; randomness comes only from ``secrets`` / ``os.urandom`` (or AES-CTR keyed from them).
"""

from veil.crypto.ciphertext import Ciphertext
from veil.crypto.encoding import FixedPoint
from veil.crypto.errors import (
    CryptoError,
    EncodingError,
    EncodingOverflow,
    InvalidCiphertext,
    InvalidKey,
)
from veil.crypto.multiexp import dot
from veil.crypto.obfuscation import Obfuscation, configure_table_cache, table_cache_info, wait_for_tables
from veil.crypto.packing import ColumnPacking, PackingLayout, decrypt_packed, encrypt_packed
from veil.crypto.paillier import PrivateKey, PublicKey, generate_keypair

__all__ = [
    "generate_keypair",
    "PublicKey",
    "PrivateKey",
    "Ciphertext",
    "FixedPoint",
    "PackingLayout",
    "ColumnPacking",
    "encrypt_packed",
    "decrypt_packed",
    "dot",
    "Obfuscation",
    "configure_table_cache",
    "table_cache_info",
    "wait_for_tables",
    "CryptoError",
    "InvalidKey",
    "InvalidCiphertext",
    "EncodingError",
    "EncodingOverflow",
]
