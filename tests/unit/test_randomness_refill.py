"""The node tops up an analyst key's randomness between queries, never while one executes."""

from __future__ import annotations

import threading
import time

import gmpy2

from veil.crypto import generate_keypair, obfuscation
from veil_server.query.release import RandomnessRefill


class FakeKey:
    """Records how a top-up ran: how many it made and whether it was stopped."""

    def __init__(self, name: str = "k") -> None:
        self.name = name
        self.made = 0
        self.started = threading.Event()
        self.stopped = 0
        self.modes: list[str] = []

    def fingerprint(self) -> str:
        return self.name

    def prepare_randomness(self, count: int, stop: threading.Event, obfuscation: str = "djn") -> None:
        self.modes.append(obfuscation)
        self.started.set()
        while self.made < count:
            if stop.is_set():
                self.stopped += 1
                return
            time.sleep(0.002)  # one obfuscator
            self.made += 1


def test_tops_up_a_real_key_after_release_and_only_when_idle() -> None:
    pk, sk = generate_keypair(1024, insecure_test_key=True)  # a key of its own: a fresh stock
    state = obfuscation._CACHE.state(gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare))
    refill = RandomnessRefill(quiet=0.05)
    try:
        with refill.executing():
            refill.request(pk, 6)  # as a release does, inside the query's execution
            time.sleep(0.2)
            assert not state.stock  # nothing while a query executes
        assert refill.wait_idle(30)
        assert len(state.stock) == 6
        c = pk.encrypt(12)  # takes a prepared obfuscator
        assert len(state.stock) == 5 and sk.decrypt(c) == 12
        refill.request(pk, 6)
        assert refill.wait_idle(30) and len(state.stock) == 6  # topped up, not 6 more
    finally:
        refill.close()
        obfuscation.clear_table_cache()


def test_a_starting_query_stops_the_top_up_and_it_resumes_when_idle() -> None:
    refill = RandomnessRefill(quiet=0.0)
    key = FakeKey()
    try:
        refill.request(key, 10_000)
        assert key.started.wait(10)
        with refill.executing():
            time.sleep(0.05)
            made = key.made
            time.sleep(0.1)
            assert key.stopped == 1 and key.made == made  # stopped, and stays stopped
        deadline = time.monotonic() + 10
        while key.made == made and time.monotonic() < deadline:
            time.sleep(0.01)
        assert key.made > made  # resumed once no query executes
    finally:
        refill.close()
    assert not refill._thread.is_alive()


def test_waits_for_a_quiet_moment_and_merges_requests_per_key() -> None:
    refill = RandomnessRefill(quiet=1.0)
    a, b = FakeKey("a"), FakeKey("b")
    try:
        with refill.executing():
            refill.request(a, 3)
            refill.request(a, 5)  # the larger target stands
            refill.request(b, 2, "full")
            refill.request(b, 0)  # nothing to do: ignored
        time.sleep(0.1)
        assert a.made == b.made == 0  # still inside the quiet period
        assert refill.wait_idle(30)
        assert (a.made, b.made) == (5, 2) and (a.modes, b.modes) == (["djn"], ["full"])
    finally:
        refill.close()


def test_close_stops_a_running_top_up() -> None:
    refill = RandomnessRefill(quiet=0.0)
    key = FakeKey()
    refill.request(key, 10**9)
    assert key.started.wait(10)
    refill.close()
    assert not refill._thread.is_alive() and key.stopped == 1
    assert refill.wait_idle(0)
