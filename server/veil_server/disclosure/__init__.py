"""Disclosure control and metering (issue 4).

- :mod:`.settings`: the owner's per-dataset choices (``dp``, per-column ``dominance``, grant
  ``quota``), parsed from the node's TOML.
- :mod:`.dp`: differential privacy: contribution bounds, sensitivities, discrete Laplace noise
  (OpenDP) on the fixed-point integers.
- :mod:`.budget`: the persistent ε budget per analyst × dataset (× purpose).
- :mod:`.differencing`: without DP, refuse releases that differ from earlier ones by fewer
  than k rows, or that make a small population exactly derivable (linear audit over atoms).
- :mod:`.dominance`: (n, p)-dominance for sums.
- :mod:`.metering`: the usage ledger, quotas and the usage report.
"""

from .settings import DisclosureSettings, DpSettings, parse_disclosure

__all__ = ["DisclosureSettings", "DpSettings", "parse_disclosure"]
