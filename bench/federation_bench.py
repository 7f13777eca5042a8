"""Cost of federated combination: Paillier with pairwise masks vs additive secret sharing vs a
plain (unprotected) sum of the same partial vectors, as members and groups grow.

Members are simulated in this process with the node's own protocol code
(``veil_server.federation.paillier_protocol`` / ``sharing_protocol``, real X25519 seeds, real
2048-bit analyst key, AES-GCM sealed shares); what is left out is gRPC, DuckDB and the audit
log, which cost the same for every protocol. Each partial has three statistics per group
(ROWS, COUNT(cost), SUM(cost): cost in [0, 500000] at scale 2, 10^9 declared rows), so the
share ring is Z_2^64. Reported per configuration:

- member s:  the slowest member's work (members run in parallel in a deployment)
- coord s:   the coordinator's (combining ciphertexts; for sharing also a compute party's sum)
- analyst s: decrypting and unpacking the released totals
- total s:   all of it, sequentially, on this machine; and its ratio to the plain sum
- KiB/member: what one member sends (masked counts + ciphertexts, or sealed share + ciphertexts)

    python bench/federation_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from veil.crypto import Ciphertext, PackingLayout, generate_keypair
from veil_server.federation import paillier_protocol, sharing_protocol
from veil_server.federation.pairwise import derive_seeds, new_ephemeral, open_sealed, seal
from veil_server.federation.partial import COUNT, ROWS, SUM, Statistic, VectorLayout, released_groups

ROWS_BOUND = 10**9
COST_HIGH = 500_000 * 100


def layout(groups: int) -> VectorLayout:
    return VectorLayout((Statistic(ROWS, "", 0, 0, ROWS_BOUND), Statistic(COUNT, "cost", 2, 0, ROWS_BOUND),
                         Statistic(SUM, "cost", 2, 0, COST_HIGH * ROWS_BOUND)), groups)


def partials(names: list[str], groups: int) -> dict[str, list[list[int]]]:
    """Synthetic data (numpy's generator is fine for data; never for masks or shares)."""
    gen = np.random.Generator(np.random.PCG64(7))
    out = {}
    for n in names:
        rows = gen.integers(0, 60, size=groups)
        out[n] = [rows.tolist(), rows.tolist(), (rows * gen.integers(0, 200_000, size=groups)).tolist()]
    return out


def seeds_for(names: list[str]) -> dict[str, dict[str, bytes]]:
    keys = {n: new_ephemeral() for n in names}
    publics = {n: pub for n, (_, pub) in keys.items()}
    return {n: derive_seeds(n, keys[n][0], publics, federated_query="bench", session=b"bench") for n in names}


def clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def plain(names, data, lay):
    total = np.zeros((3, lay.groups), dtype=object)
    for n in names:
        total = total + np.array(data[n], dtype=object)
    return total


def run_paillier(pk, sk, names, data, lay, seeds, k=10):
    member_t, sent = [], []
    masked = {}
    for n in names:
        masked[n], t = clock(lambda: paillier_protocol.masked_counts(lay, data[n], me=n, seeds=seeds[n],
                                                                     members=len(names), context=b"c"))
        member_t.append(t)
    combined = paillier_protocol.combined_counts(lay, list(masked.values()), len(names))
    released = released_groups(lay, combined, k)
    sections = {}
    for i, n in enumerate(names):
        sections[n], t = clock(lambda: paillier_protocol.encrypt_released(
            pk, lay, data[n], released, me=n, seeds=seeds[n], members=len(names), context=b"c"))
        member_t[i] += t
        sent.append(len(masked[n]) + sum(len(c) for s in sections[n] for c in s))
    combined_cts, coord_t = clock(lambda: paillier_protocol.combine(pk, list(sections.values())))
    packings = paillier_protocol.section_layouts(pk, lay, len(names))
    cells = sum(released)

    def analyst():
        out = []
        for packing, cts, st in zip(packings, combined_cts, lay.statistics):
            raw = packing.unpack(sk.decrypt_raw_many([Ciphertext.from_bytes(pk, c) for c in cts]), cells,
                                 terms=len(names))
            out.append(raw)
        return out

    totals, analyst_t = clock(analyst)
    return max(member_t), coord_t, analyst_t, sum(member_t) + coord_t + analyst_t, max(sent), totals, released


def run_sharing(pk, sk, names, data, lay, seeds, k=10):
    ring = sharing_protocol.share_ring(lay, len(names))
    count = len(lay.statistics) * lay.groups
    member_t, sent, own, inbox = [], [], {}, {n: {} for n in names}
    for n in names:
        def contribute():
            o, target, t = sharing_protocol.split_partial(ring, data[n], me=n, members=names, compute=names,
                                                          seeds=seeds[n], federated_query="bench")
            return o, target, seal(seeds[n][target], "bench", n, target, ring.to_bytes(t))
        (own[n], target, sealed), t = clock(contribute)
        inbox[target][n] = sealed
        member_t.append(t)
        sent.append(len(sealed[1]))
    summed = {}
    for i, j in enumerate(names):
        def aggregate():
            received = {s: ring.from_bytes(open_sealed(seeds[j][s], "bench", s, j, *inbox[j][s]), count)
                        for s in inbox[j]}
            return sharing_protocol.sum_shares(ring, count, me=j, members=names, compute=names, seeds=seeds[j],
                                               own=own[j], received=received, federated_query="bench")
        summed[j], t = clock(aggregate)
        member_t[i] += t
    combined = sharing_protocol.combined_counts(
        ring, lay, [sharing_protocol.count_share(ring, lay, summed[j]) for j in names])
    released = released_groups(lay, combined, k)
    sections = {}
    for i, j in enumerate(names):
        sections[j], t = clock(lambda: sharing_protocol.encrypt_released(pk, ring, lay, summed[j], released,
                                                                         len(names)))
        member_t[i] += t
        sent[i] += sum(len(c) for s in sections[j] for c in s) + len(lay.count_indices) * lay.groups * 8
    combined_cts, coord_t = clock(lambda: sharing_protocol.combine(pk, list(sections.values())))
    packing = sharing_protocol.section_layout(pk, ring, len(names))
    cells = sum(released)

    def analyst():
        out = []
        for cts in combined_cts:
            raw = PackingLayout(packing.slot_bits, packing.slots, 0, (1 << packing.slot_bits) - 1, 1,
                                pk.bits).unpack(sk.decrypt_raw_many([Ciphertext.from_bytes(pk, c) for c in cts]), cells)
            out.append([v % ring.modulus for v in raw])
        return out

    totals, analyst_t = clock(analyst)
    return max(member_t), coord_t, analyst_t, sum(member_t) + coord_t + analyst_t, max(sent), totals, released


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    grid = ([(3, 10), (3, 1000), (5, 1000)] if args.quick else
            [(3, 10), (3, 100), (3, 1000), (3, 10_000), (5, 1000), (10, 10), (10, 1000), (10, 10_000)])
    pk, sk = generate_keypair(2048)
    # Warm up outside the timings: the process pool and the key's fixed-base table are one-off.
    sk.decrypt_raw_many(pk.encrypt_raw_many(list(range(300))))
    print("\nFederated combination (in-process members, 2048-bit analyst key): Paillier vs sharing vs plain sum")
    print(f"{'nodes':>5} {'groups':>6} {'plain ms':>9} | {'protocol':>8} {'member s':>9} {'coord s':>8} "
          f"{'analyst s':>9} {'total s':>8} {'x plain':>9} {'KiB/member':>10}")
    rows = []
    for nodes, groups in grid:
        names = [f"m{i:02d}" for i in range(nodes)]
        lay = layout(groups)
        data = partials(names, groups)
        seeds = seeds_for(names)
        expected, plain_t = clock(lambda: plain(names, data, lay))
        for protocol, fn in (("paillier", run_paillier), ("sharing", run_sharing)):
            member, coord, analyst, total, sent, totals, released = fn(pk, sk, names, data, lay, seeds)
            keep = [g for g in range(groups) if released[g]]
            want = [[int(expected[s][g]) for g in keep] for s in range(3)]
            assert totals == want, f"{protocol} total differs from the plain sum"
            rows.append({"nodes": nodes, "groups": groups, "protocol": protocol, "total_s": total})
            print(f"{nodes:>5} {groups:>6} {plain_t * 1e3:>9.2f} | {protocol:>8} {member:>9.3f} {coord:>8.3f} "
                  f"{analyst:>9.3f} {total:>8.2f} {total / plain_t:>9.0f} {sent / 1024:>10.1f}")
    return rows


if __name__ == "__main__":
    main()
