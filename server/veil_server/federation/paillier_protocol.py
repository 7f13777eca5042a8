"""Federated combination with Paillier and pairwise zero-sum masks.

Parties: N members (each holds a partial vector x_i, see ``partial.py``), one of them the
coordinator, and the analyst (holds the Paillier private key for n). Steps after PREPARE (each
member approves its part and signs a fresh X25519 key; see ``pairwise.py`` for the seeds s_ij):

1. COUNTS. Member i sends c_i + m_i (mod 2^B), where c_i is its count section (ROWS and COUNT
   per group) and m_i its zero-sum mask from the seeds. The coordinator forwards all N signed
   vectors to every member; each sums them itself (the masks cancel) to the combined counts C,
   and computes the released groups: combined ROWS and every COUNT >= k, k the largest of the
   members' minimum group sizes. No member trusts the coordinator's arithmetic for this.
2. VALUES. For each statistic, member i packs its values of the released groups into
   plaintexts P_i (slots sized for a sum of N vectors: ``PackingLayout.for_range(pk, low, high,
   terms=N)``), adds its zero-sum mask r_i mod n, and encrypts M_i = P_i + r_i mod n under the
   analyst's key. The coordinator multiplies the N ciphertexts slot-group by slot-group and
   obfuscates the product: it decrypts to sum(M_i) = sum(P_i) + sum(r_i) = sum(P_i) (mod n),
   and because the slots were sized for N terms, sum(P_i) < 2^(bits(n) - 3) < n, so the
   reduction mod n is exact and every slot holds sum_i (v_i - low) without carry.
   Why masking the *packed* plaintext is sound: masks live in Z_n, not in the slots. A mask
   scrambles all slots of M_i at once (M_i is uniform in Z_n), and the masks cancel exactly
   mod n before unpacking, so no slot ever sees a mask or a carry from one.

What each party learns:
- A member: its own partial; the combined counts C of every group of the domain (including
  the groups then suppressed); k; which groups are released. Every other member's count vector
  and ciphertexts are uniform to it (each mask includes a seed it lacks).
- The coordinator: as a member, plus every member's signed masked counts and ciphertexts. It
  cannot decrypt; the product of any proper subset of the ciphertexts is still masked.
- The analyst: the totals of the released groups' statistics, nothing else. Colluding with the
  coordinator it can decrypt each M_i and any product of a proper subset, and each is uniform
  in Z_n because it still holds a mask built from a seed between two members outside the
  subset. Coordinator + analyst do learn sum_{j != coordinator} x_j = total - x_coordinator, as
  any party that knows one partial and the total must; with 3+ members no single other partial.
- Collusion: members that pool their seeds can remove their own masks only; N - 1 colluding
  members learn the remaining member's partial (inherent in releasing the total).
Semi-honest model: a member that sends wrong values corrupts the total undetected (a
MAC-checked or zero-knowledge variant would be needed against malicious members).
"""

from __future__ import annotations

from veil.crypto import Ciphertext, PackingLayout, PublicKey
from veil.crypto.obfuscation import Obfuscation

from .pairwise import zero_sum_mod, zero_sum_ring
from .partial import VectorLayout, count_slice, flatten
from .ring import Ring, ring_bits_for


def count_ring(layout: VectorLayout, members: int) -> Ring:
    """Z_2^64 unless N times the row bound does not fit it."""
    return Ring(ring_bits_for(members * max((s.high for s in layout.statistics if s.is_count), default=0)))


def masked_counts(layout: VectorLayout, matrix: list[list[int]], *, me: str, seeds: dict[str, bytes],
                  members: int, context: bytes) -> bytes:
    ring = count_ring(layout, members)
    counts = flatten(matrix)[count_slice(layout)]
    mask = zero_sum_ring(ring, me, seeds, len(counts), b"counts|" + context)
    return ring.to_bytes(ring.add(ring.encode(counts), mask))


def combined_counts(layout: VectorLayout, masked: list[bytes], members: int) -> list[int]:
    ring = count_ring(layout, members)
    width = count_slice(layout).stop
    return ring.decode(ring.total([ring.from_bytes(m, width) for m in masked]))


def section_layouts(pk: PublicKey, layout: VectorLayout, members: int) -> list[PackingLayout]:
    return [PackingLayout.for_range(pk, s.low, s.high, terms=members) for s in layout.statistics]


def encrypt_released(pk: PublicKey, layout: VectorLayout, matrix: list[list[int]], released: list[bool], *,
                     me: str, seeds: dict[str, bytes], members: int, context: bytes,
                     obfuscation: Obfuscation = "djn") -> list[list[bytes]]:
    """One list of ciphertexts per statistic: this member's masked, packed released values."""
    sections = []
    for j, (row, packing) in enumerate(zip(matrix, section_layouts(pk, layout, members))):
        values = [v for v, keep in zip(row, released) if keep]
        plaintexts = packing.pack(values) if values else []
        masks = zero_sum_mod(me, seeds, pk.n, len(plaintexts), b"values|%d|" % j + context)
        masked = [(p + r) % pk.n for p, r in zip(plaintexts, masks)]
        sections.append([c.to_bytes() for c in pk.encrypt_raw_many(masked, obfuscation=obfuscation)])
    return sections


def combine(pk: PublicKey, contributions: list[list[list[bytes]]], *,
            obfuscation: Obfuscation = "djn") -> list[list[bytes]]:
    """The coordinator's step: per statistic and position, the product of every member's
    ciphertext (= Enc of the sum), obfuscated so it cannot be linked to its factors."""
    out = []
    for j in range(len(contributions[0])):
        column = []
        for pos in range(len(contributions[0][j])):
            acc = Ciphertext.from_bytes(pk, contributions[0][j][pos])
            for member in contributions[1:]:
                acc = acc + Ciphertext.from_bytes(pk, member[j][pos])
            column.append(acc.obfuscate(obfuscation=obfuscation).to_bytes())
        out.append(column)
    return out
