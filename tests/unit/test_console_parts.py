"""The console's pure parts: its settings, sessions and sign-in throttle, charts and CSV cells."""

from __future__ import annotations

import pytest

from veil_server.config import ConfigError
from veil_server.console.calls import Credential
from veil_server.console.charts import Series, bar_chart, line_chart
from veil_server.console.sessions import Sessions, SignInThrottle
from veil_server.console.settings import ConsoleSettings, parse_console
from veil_server.console.usage import _cell


def test_settings() -> None:
    assert parse_console(None, env={}, error=ConfigError) == ConsoleSettings()  # off by default
    s = parse_console({"enabled": True, "listen": "0.0.0.0:9443", "session_idle_minutes": 5}, env={},
                      error=ConfigError)
    assert (s.enabled, s.listen, s.session_idle_minutes) == (True, "0.0.0.0:9443", 5)
    s = parse_console({}, env={"VEIL_CONSOLE_ENABLED": "1", "VEIL_CONSOLE_LISTEN": "127.0.0.1:0"}, error=ConfigError)
    assert (s.enabled, s.listen) == (True, "127.0.0.1:0")


@pytest.mark.parametrize("raw, message", [
    ({"enabled": "yes"}, "enabled"), ({"listen": "nowhere"}, "HOST:PORT"), ({"listen": "h:99999"}, "HOST:PORT"),
    ({"session_idle_minutes": 0}, "session_idle_minutes"), ({"session_max_hours": 10_000}, "session_max_hours"),
    ({"colour": "blue"}, "unknown keys"),
])
def test_bad_settings(raw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_console(raw, env={}, error=ConfigError)


def test_sessions_expire_and_nonces_are_single_use() -> None:
    now = [1000.0]
    s = Sessions(idle_seconds=60, max_seconds=600, max_sessions=2, clock=lambda: now[0])
    a = s.create("olivia", "owner", Credential(token="t"), "token")
    assert s.get(a.id) == (a, False) and a.csrf_matches(a.csrf) and not a.csrf_matches("x")
    now[0] += 61
    assert s.get(a.id) == (None, True) and s.get(a.id) == (None, False)
    b = s.create("olivia", "owner", Credential(token="t"), "token")
    for _ in range(9):
        now[0] += 59
        assert s.get(b.id)[0] is b
    now[0] += 59  # 590 s of use, then past the absolute limit
    now[0] += 11
    assert s.get(b.id) == (None, True)
    nonce = s.new_nonce()
    assert not s.take_nonce(nonce, "other") and s.take_nonce(nonce, nonce) and not s.take_nonce(nonce, nonce)
    assert "x" * 40 not in repr(Credential(token="x" * 40))


def test_sign_in_throttle_counts_failures_per_address() -> None:
    now = [0.0]
    t = SignInThrottle(per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        assert not t.blocked("10.0.0.1")
        t.failed("10.0.0.1")
    assert t.blocked("10.0.0.1") and not t.blocked("10.0.0.2")
    now[0] += 61
    assert not t.blocked("10.0.0.1")


def test_charts_escape_their_labels_and_carry_a_title() -> None:
    svg = line_chart("ε <per> analyst", "desc & more", [Series("<script>x</script>", [(0, 0), (10, 1.5)])], 0, 10, "ε")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<title" in svg and " style=" not in svg
    bars = bar_chart("t", "d", ["a", "b"], [("submitted", [1.0, 2.0]), ("refused", [0.0, 3.0])], "queries")
    assert bars.count("<rect class=\"bar") == 6  # 4 bars and 2 legend keys


def test_csv_cells_never_run_as_formulas() -> None:
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("+1") == "'+1" and _cell("@x") == "'@x"
    assert _cell("alice") == "alice" and _cell(0.5) == "0.500000" and _cell(3) == "3"
