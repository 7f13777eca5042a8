"""The README's precision table is what the code's rule gives (issue 20: it once said "12 more
decimal digits", which was never the rule)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from veil_server.query.release import RESOLUTION_DIGITS, derived_scale

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_precision_table_matches_derived_scale():
    rows = re.findall(r"^\| `\[(\d+), (\d+)\]` \(width \d+\) \| (\d+) \| (\d+) \|$", README.read_text(), re.M)
    assert len(rows) == 3
    for low, high, avg_digits, var_digits in rows:
        width = Decimal(high) - Decimal(low)
        assert derived_scale(width, 0) == int(avg_digits), (low, high)
        assert derived_scale(width, 0, 2) == int(var_digits), (low, high)
    assert "10⁻¹²" in README.read_text() and RESOLUTION_DIGITS == 12
