"""Federated combination with additive secret sharing among m >= 2 compute parties.

Parties: N members (partial vectors x_i), m compute parties P (members; all of them by
default), one member as coordinator, and the analyst (Paillier key n). The ring is Z_2^B with
B the smallest multiple of 64 that holds N times the declared worst case of every statistic
(``ring.ring_bits_for``): 64 bits for counts and sums, 128 once sums of squares need it.

1. SHARE. Member i splits its whole vector x_i (statistic-major, every group of the domain)
   into m shares, one per compute party. To save bandwidth, the shares for every party j but
   one are expanded from the pairwise seed s_ij (``Ring.seeded``: i and j both compute them;
   nobody else can), i's own share (if i is a compute party) is fresh local randomness, and only
   the last, x_i minus all the others, travels: sealed with AES-256-GCM for its designated
   party d_i and signed. The coordinator relays sealed shares; it cannot open those not its own.
2. AGGREGATE. Compute party j sums, over every member i, the share of x_i it holds (seeded,
   own, or the sealed one it received) into y_j; it returns only y_j's count section.
3. RELEASE. The coordinator forwards the m signed count shares to every compute party; each
   reconstructs the combined counts C itself, and computes the released groups (combined ROWS
   and every COUNT >= k, k the largest of the members' minimum group sizes). Each then packs
   its y_j of the released groups' statistics as values in [0, 2^B) with slots sized for m
   terms, encrypts them under the analyst's key and returns them signed. The coordinator
   multiplies the m ciphertexts position by position and obfuscates: each slot decrypts to
   sum_j y_j (no carry: the slot has room for m terms), which the analyst reduces mod 2^B and
   reads as a signed total.

What each party learns:
- A member: its own partial. A compute party also learns its shares (each uniform: every share
  it holds of x_i is either a seeded stream it shares only with i, or x_i minus streams that
  include a seed it lacks), y_j (uniform), and, like every compute party and the coordinator,
  the combined counts C of every group (including the groups then suppressed).
- A member that is not a compute party learns nothing beyond its own partial (it is told
  nothing back); it relies on the compute parties to apply k (each does, from signed inputs).
- The coordinator: as a compute party, plus sealed shares it cannot open and the compute
  parties' signed count shares (it reconstructs C, as above) and encrypted value shares.
- The analyst: the totals of the released groups' statistics. With the coordinator it can
  decrypt each party's y_j of the released groups: m uniform vectors summing to the totals.
- Collusion: secure unless all m compute parties pool their shares (then they learn every
  member's partial); fewer than m learn nothing beyond C. Semi-honest only: a party that alters
  a share alters the total undetected (MAC-checked shares, as in SPDZ, would be needed).
"""

from __future__ import annotations

import numpy as np

from veil.crypto import PackingLayout, PublicKey, encrypt_packed
from veil.crypto.obfuscation import Obfuscation

from .paillier_protocol import combine  # noqa: F401  (the same position-wise product and obfuscation)
from .partial import VectorLayout, count_slice, flatten
from .ring import Ring, ring_bits_for


def share_ring(layout: VectorLayout, members: int) -> Ring:
    return Ring(ring_bits_for(layout.max_abs(members)))


def designated(me: str, members: list[str], compute: list[str]) -> str:
    """The compute party that receives member ``me``'s travelling share (never itself)."""
    if me in compute:
        return compute[(compute.index(me) + 1) % len(compute)]
    return compute[members.index(me) % len(compute)]


def _share_context(federated_query: str, sender: str, recipient: str) -> bytes:
    return f"share|{federated_query}|{sender}->{recipient}".encode()


def split_partial(ring: Ring, matrix: list[list[int]], *, me: str, members: list[str], compute: list[str],
                  seeds: dict[str, bytes], federated_query: str) -> tuple[np.ndarray | None, str, np.ndarray]:
    """(own share or None, designated party, the share that travels to it)."""
    x = ring.encode(flatten(matrix))
    count = x.shape[0]
    target = designated(me, members, compute)
    own = ring.random(count) if me in compute else None
    rest = own if own is not None else ring.zeros(count)
    for j in compute:
        if j not in (me, target):
            rest = ring.add(rest, ring.seeded(seeds[j], _share_context(federated_query, me, j), count))
    return own, target, ring.sub(x, rest)


def sum_shares(ring: Ring, count: int, *, me: str, members: list[str], compute: list[str], seeds: dict[str, bytes],
               own: np.ndarray | None, received: dict[str, np.ndarray], federated_query: str) -> np.ndarray:
    """y_me: the sum over every member of the share of its vector this party holds."""
    acc = ring.zeros(count)
    for i in members:
        if i == me:
            assert own is not None
            share = own
        elif designated(i, members, compute) == me:
            share = received[i]
        else:
            share = ring.seeded(seeds[i], _share_context(federated_query, i, me), count)
        acc = ring.add(acc, share)
    return acc


def count_share(ring: Ring, layout: VectorLayout, summed: np.ndarray) -> bytes:
    return ring.to_bytes(summed[count_slice(layout)])


def combined_counts(ring: Ring, layout: VectorLayout, shares: list[bytes]) -> list[int]:
    width = count_slice(layout).stop
    return ring.decode(ring.total([ring.from_bytes(s, width) for s in shares]))


def section_layout(pk: PublicKey, ring: Ring, parties: int) -> PackingLayout:
    return PackingLayout.for_range(pk, 0, ring.modulus - 1, terms=parties)


def encrypt_released(pk: PublicKey, ring: Ring, layout: VectorLayout, summed: np.ndarray, released: list[bool],
                     parties: int, *, obfuscation: Obfuscation = "djn") -> list[list[bytes]]:
    """One list of ciphertexts per statistic: this party's summed shares of the released groups."""
    packing = section_layout(pk, ring, parties)
    g = layout.groups
    keep = np.array(released, dtype=bool)
    sections = []
    for j in range(len(layout.statistics)):
        rows = summed[j * g : (j + 1) * g][keep]
        values = [v % ring.modulus for v in ring.decode(rows)]  # unsigned ring elements
        sections.append([c.to_bytes() for c in encrypt_packed(pk, values, packing, obfuscation=obfuscation)]
                        if values else [])
    return sections
