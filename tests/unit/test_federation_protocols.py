"""Federation building blocks without a network: the ring, pairwise masks and seeds, share
splitting with any set of compute parties, and the [federation] config section."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from veil.crypto import generate_keypair
from veil_server.config import ConfigError, parse_config
from veil_server.federation import sharing_protocol
from veil_server.federation.pairwise import derive_seeds, new_ephemeral, open_sealed, seal, zero_sum_mod, zero_sum_ring
from veil_server.federation.ring import Ring, ring_bits_for
from veil_server.errors import Unauthenticated

NAMES = ["a", "b", "c", "d"]


@pytest.mark.parametrize("bits", [64, 128, 192])
def test_ring_arithmetic_matches_python_integers(bits):
    ring, m, half = Ring(bits), 1 << bits, 1 << (bits - 1)
    xs = [secrets.randbelow(m) - half for _ in range(500)] + [half - 1, -half, 0, -1]
    ys = [secrets.randbelow(m) - half for _ in xs]
    signed = lambda v: (v % m) - m if v % m >= half else v % m  # noqa: E731
    assert ring.decode(ring.add(ring.encode(xs), ring.encode(ys))) == [signed(x + y) for x, y in zip(xs, ys)]
    assert ring.decode(ring.sub(ring.encode(xs), ring.encode(ys))) == [signed(x - y) for x, y in zip(xs, ys)]
    assert ring.decode(ring.from_bytes(ring.to_bytes(ring.encode(xs)), len(xs))) == xs
    with pytest.raises(Exception):
        ring.encode([half])


def test_ring_width_follows_the_worst_case():
    assert ring_bits_for(2**63 - 1) == 64 and ring_bits_for(2**63) == 128 and ring_bits_for(3 * 2**81) == 128


def _seeds():
    keys = {n: new_ephemeral() for n in NAMES}
    publics = {n: pub for n, (_, pub) in keys.items()}
    return {n: derive_seeds(n, keys[n][0], publics, federated_query="q1", session=b"s") for n in NAMES}


def test_pairwise_seeds_agree_and_masks_cancel():
    seeds = _seeds()
    assert all(seeds[a][b] == seeds[b][a] for a in NAMES for b in NAMES if a != b)
    ring = Ring(128)
    masks = [zero_sum_ring(ring, n, seeds[n], 50, b"ctx") for n in NAMES]
    assert ring.decode(ring.total(masks)) == [0] * 50
    assert all(ring.decode(m) != [0] * 50 for m in masks)
    pk, _ = generate_keypair(512, insecure_test_key=True)  # small: only the modular arithmetic is tested
    mod = [zero_sum_mod(n, seeds[n], pk.n, 20, b"ctx") for n in NAMES]
    assert [sum(col) % pk.n for col in zip(*mod)] == [0] * 20
    other = [zero_sum_mod(n, seeds[n], pk.n, 20, b"other") for n in NAMES]
    assert other[0] != mod[0]  # a different context, different masks


def test_sealed_shares_open_only_for_their_recipient():
    seeds = _seeds()
    nonce, ct = seal(seeds["a"]["b"], "q1", "a", "b", b"share bytes")
    assert open_sealed(seeds["b"]["a"], "q1", "a", "b", nonce, ct) == b"share bytes"
    for seed, q, sender, recipient in [(seeds["c"]["a"], "q1", "a", "b"), (seeds["b"]["a"], "q2", "a", "b"),
                                       (seeds["b"]["a"], "q1", "a", "c")]:
        with pytest.raises(Unauthenticated):
            open_sealed(seed, q, sender, recipient, nonce, ct)


@pytest.mark.parametrize("compute", [NAMES, ["a", "c"], ["b", "c", "d"]])
def test_shares_sum_to_every_partial_for_any_compute_parties(compute):
    seeds = _seeds()
    ring = Ring(128)
    partials = {n: [[secrets.randbelow(10**20) - 10**19 for _ in range(30)]] for n in NAMES}
    own, travelling = {}, {}
    for n in NAMES:
        o, target, t = sharing_protocol.split_partial(ring, partials[n], me=n, members=NAMES, compute=compute,
                                                      seeds=seeds[n], federated_query="q1")
        assert target in compute and target != n and (o is not None) == (n in compute)
        own[n], travelling[(n, target)] = o, t
    summed = []
    for j in compute:
        received = {n: t for (n, target), t in travelling.items() if target == j}
        summed.append(sharing_protocol.sum_shares(ring, 30, me=j, members=NAMES, compute=compute, seeds=seeds[j],
                                                  own=own.get(j), received=received, federated_query="q1"))
    total = ring.decode(ring.total(summed))
    assert total == [sum(partials[n][0][i] for n in NAMES) for i in range(30)]
    if len(compute) > 1:  # any proper subset of the parties' sums is not the total
        assert ring.decode(ring.total(summed[:-1])) != total


BASE = """
[node]
name = "north"
[[datasets]]
name = "patients"
source = "p.csv"
purposes = ["research"]
  [[datasets.columns]]
  name = "x"
  type = "integer"
  controls = ["aggregate"]
  range = [0, 10]
"""
KEY = "ab" * 32


def _parse(extra: str):
    import tomllib

    return parse_config(tomllib.loads(BASE + extra), base_dir=Path("/tmp"))


def test_federation_section_parses_and_pins_keys():
    cfg = _parse(f"""
[federation]
timeout_seconds = 5
[[federation.peers]]
name = "south"
address = "127.0.0.1:1"
public_key = "{KEY}"
[[federation.peers]]
name = "east"
address = "127.0.0.1:2"
public_key = "{KEY}"
[[federation.datasets]]
name = "admissions"
local = "patients"
members = ["south", "north", "east"]
""").federation
    assert cfg.name == "north" and cfg.peer("south").public_key == KEY and cfg.timeout_seconds == 5
    assert cfg.dataset("ADMISSIONS").members == ("east", "north", "south")
    assert cfg.dataset("admissions").protocols == ("paillier", "sharing")
    assert _parse("").federation is None


@pytest.mark.parametrize("extra,needle", [
    ('[[federation.peers]]\nname = "s"\naddress = "h:1"\n', "pinned key"),
    (f'[[federation.peers]]\nname = "s"\naddress = "h:1"\npublic_key = "{KEY[:-2]}"\n', "64 hex"),
    ('[[federation.datasets]]\nname = "d"\nlocal = "nope"\nmembers = ["north", "s"]\n', "local"),
    ('[[federation.datasets]]\nname = "d"\nlocal = "patients"\nmembers = ["north", "s"]\n', "at least three"),
    ('[[federation.datasets]]\nname = "d"\nlocal = "patients"\nmembers = ["north", "ghost", "x"]\n', "not declared"),
    ('[[federation.datasets]]\nname = "d"\nlocal = "patients"\nmembers = ["south", "east", "x"]\n', "this node"),
    (f'[[federation.peers]]\nname = "s"\naddress = "h:1"\npublic_key = "{KEY}"\n'
     f'[[federation.peers]]\nname = "t"\naddress = "h:2"\npublic_key = "{KEY}"\n[[federation.datasets]]\n'
     'name = "d"\nlocal = "patients"\nmembers = ["north", "s", "t"]\nprotocols = ["smoke"]\n', "protocols"),
])
def test_bad_federation_sections_are_refused_naming_the_key(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        _parse("[federation]\n" + extra)


def test_masks_never_use_numpy_generators():
    import inspect

    from veil_server.federation import pairwise, ring

    for module in (pairwise, ring, sharing_protocol):
        src = inspect.getsource(module)
        assert "np.random" not in src and "import random" not in src
