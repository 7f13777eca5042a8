"""Disclosure control and metering.

What a released number may reveal about one person is decided here, on every path that releases
numbers (plain aggregates, encrypted-input sums, federated partials):

- :mod:`.settings`: the owner's choice per dataset (``disclosure = "dp"``, the default, or
  ``"exact"``), ε terms and budgets, column dominance rules, grant quotas.
- :mod:`.noise`: the discrete Laplace mechanism on exact fixed-point integers (OpenDP), at any
  magnitude; its accuracy is public arithmetic in :mod:`veil.accuracy`.
- :mod:`.dp`: which noisy statistics a query needs, how ε is split between them, and the cells
  derived from them (AVG and VAR from centred sums).
- :mod:`.budget`: ε per analyst and per dataset (across all analysts), pure-DP accounting.
- :mod:`.lattice` and :mod:`.history`: exact mode. Filters aligned to declared domains, the
  per-dataset release history as a laminar family of populations (structural refusals only),
  secondary suppression of cells whose release would let a small population be derived.
- :mod:`.dominance`: the (n, p %) rule in exact mode, for every aggregate of a dominated cell.
- :mod:`.metering`: the usage ledger, quotas (refusals included) and the usage report.
- :mod:`.control`: where all of this meets the query lifecycle.
"""

from .settings import DisclosurePolicy, DisclosureSettings, parse_disclosure, parse_policy

__all__ = ["DisclosurePolicy", "DisclosureSettings", "parse_disclosure", "parse_policy"]
