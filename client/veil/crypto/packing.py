"""Packing several bounded integer cells into one Paillier plaintext.

Security basis: unchanged Paillier/DCRA -- a packed plaintext is just a plaintext in Z_n, so a
ciphertext still reveals nothing to anyone without the private key.
What it reveals: the decryptor learns every cell of every ciphertext it decrypts, exactly as if
each cell had its own ciphertext; the layout (range, slot width, cells per ciphertext) is public.
Anyone who can only add ciphertexts cannot move information between slots as long as the slots
do not carry, which is what the sizing below guarantees -- and why out-of-range values are
refused *before* encryption: an overflowing slot would silently corrupt its neighbour.

Layout. Slot k of a plaintext holds (v - low) at bit offset k * slot_bits. With
slot_bits = bit_length(terms * (high - low)), a sum of ``terms`` packed vectors keeps every slot
<= terms * (high - low) < 2^slot_bits, so no carry crosses a slot boundary. Slots fill at most
k - 3 bits of a k-bit modulus: packed sums stay < 2^(k-3) <= n/4 < n // 3, below n with room to
spare and inside the signed range too, so even a signed decrypt cannot misread them.
Multiplying a packed ciphertext by a scalar c >= 0 counts as c terms.

``ColumnPacking`` is the single-party variant: cells of several columns, each column with its
own range and so its own slot width, so that a narrow column (a count) does not take the width
of the widest (a sum). Its plaintexts are decrypted, never summed, so a slot only needs to hold
its own cell; it reveals the same as ``PackingLayout`` (the per-column widths are public).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from veil.crypto.errors import EncodingOverflow

if TYPE_CHECKING:
    from veil.crypto.ciphertext import Ciphertext
    from veil.crypto.obfuscation import Obfuscation
    from veil.crypto.paillier import PrivateKey, PublicKey

__all__ = ["PackingLayout", "ColumnPacking", "encrypt_packed", "decrypt_packed", "HEADROOM_BITS"]

HEADROOM_BITS = 3


@dataclass(frozen=True, slots=True)
class PackingLayout:
    """How cells in [low, high] are laid out in plaintexts of a ``key_bits``-bit key."""

    slot_bits: int
    slots: int
    low: int
    high: int
    terms: int
    key_bits: int

    def __post_init__(self) -> None:
        # Layouts are also rebuilt from wire fields: an inconsistent one must not decode silently.
        if self.slot_bits < 1 or self.slots < 1 or self.terms < 1 or self.high < self.low:
            raise ValueError("layout needs slot_bits, slots, terms >= 1 and high >= low")
        if (self.terms * (self.high - self.low)).bit_length() > self.slot_bits:
            raise EncodingOverflow("slots are too narrow for terms * (high - low)")
        if self.slots * self.slot_bits > self.key_bits - HEADROOM_BITS:
            raise EncodingOverflow("slots do not fit below the key's headroom")

    @classmethod
    def for_range(cls, pk: PublicKey, low: int, high: int, *, terms: int = 1) -> PackingLayout:
        low, high, terms = operator.index(low), operator.index(high), operator.index(terms)
        if high < low:
            raise ValueError("high must be >= low")
        if terms < 1:
            raise ValueError("terms must be >= 1")
        slot_bits = max(1, (terms * (high - low)).bit_length())
        capacity = pk.bits - HEADROOM_BITS
        if slot_bits > capacity:
            raise EncodingOverflow("range times terms is too wide to fit one plaintext of this key")
        return cls(slot_bits, capacity // slot_bits, low, high, terms, pk.bits)

    def ciphertexts_for(self, count: int) -> int:
        return -(-count // self.slots)

    def pack(self, values: Sequence[int] | np.ndarray) -> list[int]:
        """Plaintexts in [0, 2^(slots*slot_bits)); refuses any value outside [low, high]."""
        cells = self._checked(values)
        low, sb, k = self.low, self.slot_bits, self.slots
        out: list[int] = []
        for start in range(0, len(cells), k):
            acc = 0
            # Horner from the top slot down: cell i of the chunk lands at bit i * slot_bits.
            for v in reversed(cells[start : start + k]):
                acc = (acc << sb) | (v - low)
            out.append(acc)
        return out

    def unpack(self, plaintexts: Sequence[int], count: int, *, terms: int = 1) -> list[int]:
        """Cells of a sum of ``terms`` packed vectors (each slot offset by terms * low)."""
        terms = operator.index(terms)
        if not 1 <= terms <= self.terms:
            raise EncodingOverflow("more packed vectors were summed than the layout was sized for")
        if not 0 <= count <= len(plaintexts) * self.slots:
            raise ValueError("count exceeds the cells these plaintexts hold")
        sb, k = self.slot_bits, self.slots
        mask = (1 << sb) - 1
        limit = 1 << (sb * k)
        worst = terms * (self.high - self.low)
        offset = terms * self.low
        out: list[int] = []
        for p in plaintexts[: self.ciphertexts_for(count)]:
            p = int(p)
            if not 0 <= p < limit:
                raise EncodingOverflow("packed plaintext exceeds the layout (wrong layout or key?)")
            for _ in range(k):
                slot = p & mask
                if slot > worst:
                    # Only reachable if more (or wider) vectors were summed than declared.
                    raise EncodingOverflow("a slot exceeds its worst case for the declared terms")
                out.append(slot + offset)
                p >>= sb
        return out[:count]

    def _checked(self, values: Sequence[int] | np.ndarray) -> list[int]:
        if isinstance(values, np.ndarray):
            if values.dtype.kind not in "iu":
                raise TypeError("packed values must be integers (encode with FixedPoint first)")
            if values.size and (int(values.min()) < self.low or int(values.max()) > self.high):
                raise EncodingOverflow("a value lies outside the layout's declared range")
            return [int(v) for v in values.ravel().tolist()]
        cells = [operator.index(v) for v in values]
        lo, hi = self.low, self.high
        for v in cells:
            if v < lo or v > hi:
                raise EncodingOverflow("a value lies outside the layout's declared range")
        return cells


@dataclass(frozen=True, slots=True)
class ColumnPacking:
    """Cells row-major over ``len(lows)`` columns; column j's cells lie in [lows[j], highs[j]]
    and take widths[j] bits. Slots fill a plaintext from bit 0 while the next one fits within
    ``capacity`` bits; the next cell starts the next plaintext."""

    lows: tuple[int, ...]
    highs: tuple[int, ...]
    widths: tuple[int, ...]
    capacity: int
    key_bits: int

    def __post_init__(self) -> None:
        # Also rebuilt from wire fields: an inconsistent packing must not decode silently.
        if not self.lows or not len(self.lows) == len(self.highs) == len(self.widths):
            raise ValueError("packing needs one low, high and width per column, and at least one column")
        if self.capacity > self.key_bits - HEADROOM_BITS:
            raise EncodingOverflow("slots do not fit below the key's headroom")
        for low, high, width in zip(self.lows, self.highs, self.widths):
            if high < low or not 1 <= width <= self.capacity:
                raise ValueError("each column needs high >= low and 1 <= width <= capacity")
            if (high - low).bit_length() > width:
                raise EncodingOverflow("a column's slots are too narrow for its range")

    @classmethod
    def for_ranges(cls, pk: PublicKey, ranges: Sequence[tuple[int, int]]) -> ColumnPacking:
        lows = tuple(operator.index(lo) for lo, _ in ranges)
        highs = tuple(operator.index(hi) for _, hi in ranges)
        widths = tuple(max(1, (hi - lo).bit_length()) for lo, hi in zip(lows, highs))
        capacity = pk.bits - HEADROOM_BITS
        if any(w > capacity for w in widths):
            raise EncodingOverflow("a column's range is too wide to fit one plaintext of this key")
        return cls(lows, highs, widths, capacity, pk.bits)

    def chunks(self, count: int) -> list[int]:
        """How many cells each plaintext holds, for ``count`` cells."""
        out: list[int] = []
        used = held = 0
        ncol = len(self.widths)
        for i in range(count):
            w = self.widths[i % ncol]
            if used + w > self.capacity:
                out.append(held)
                used = held = 0
            used += w
            held += 1
        if held:
            out.append(held)
        return out

    def ciphertexts_for(self, count: int) -> int:
        return len(self.chunks(count))

    def pack(self, values: Sequence[int] | np.ndarray) -> list[int]:
        """Plaintexts below 2^capacity; refuses any cell outside its column's [low, high]."""
        cells = [int(v) for v in values.ravel().tolist()] if isinstance(values, np.ndarray) else \
            [operator.index(v) for v in values]
        lows, highs, widths, ncol = self.lows, self.highs, self.widths, len(self.widths)
        out: list[int] = []
        i = 0
        for n in self.chunks(len(cells)):
            acc = shift = 0
            for _ in range(n):
                j = i % ncol
                v = cells[i]
                if v < lows[j] or v > highs[j]:
                    raise EncodingOverflow("a value lies outside its column's declared range")
                acc |= (v - lows[j]) << shift
                shift += widths[j]
                i += 1
            out.append(acc)
        return out

    def unpack(self, plaintexts: Sequence[int], count: int, *, terms: int = 1) -> list[int]:
        """The ``count`` cells of these plaintexts (``terms`` must be 1: nothing was summed)."""
        if terms != 1:
            raise EncodingOverflow("per-column packing holds one party's cells; sums would carry")
        sizes = self.chunks(count)
        if len(sizes) > len(plaintexts):
            raise ValueError("count exceeds the cells these plaintexts hold")
        lows, highs, widths, ncol = self.lows, self.highs, self.widths, len(self.widths)
        out: list[int] = []
        i = 0
        for p, n in zip(plaintexts, sizes):
            p = int(p)
            if not 0 <= p < 1 << self.capacity:
                raise EncodingOverflow("packed plaintext exceeds the layout (wrong layout or key?)")
            for _ in range(n):
                j = i % ncol
                slot = p & ((1 << widths[j]) - 1)
                if slot > highs[j] - lows[j]:
                    raise EncodingOverflow("a slot exceeds its column's range")
                out.append(slot + lows[j])
                p >>= widths[j]
                i += 1
            if p:
                raise EncodingOverflow("bits set beyond the last slot of a plaintext")
        return out


def _check_key(pk: PublicKey, layout: PackingLayout | ColumnPacking) -> None:
    if pk.bits < layout.key_bits:
        raise EncodingOverflow("layout was sized for a longer key than this one")


def encrypt_packed(
    pk: PublicKey,
    values: Sequence[int] | np.ndarray,
    layout: PackingLayout | ColumnPacking,
    *,
    workers: int | None = None,
    obfuscation: Obfuscation = "djn",
    executor: Executor | None = None,
) -> list[Ciphertext]:
    """Encrypt ``values`` packed by ``layout``; ranges checked first."""
    _check_key(pk, layout)
    return pk.encrypt_raw_many(
        layout.pack(values), workers=workers, obfuscation=obfuscation, executor=executor
    )


def decrypt_packed(
    sk: PrivateKey,
    cts: Sequence[Ciphertext],
    layout: PackingLayout | ColumnPacking,
    count: int,
    *,
    terms: int = 1,
    workers: int | None = None,
    executor: Executor | None = None,
) -> list[int]:
    """Decrypt packed ciphertexts holding a sum of ``terms`` packed vectors into ``count`` cells."""
    _check_key(sk.public_key, layout)
    needed = layout.ciphertexts_for(count)
    if needed > len(cts):
        raise ValueError("count exceeds the cells these ciphertexts hold")
    return layout.unpack(
        sk.decrypt_raw_many(cts[:needed], workers=workers, executor=executor), count, terms=terms
    )
