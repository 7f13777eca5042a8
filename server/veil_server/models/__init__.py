"""Models (issue 18): regression on data nobody sees.

The node parses a formula against the column controls (``formula.py``), builds the design matrix
inside the engine and computes only its aggregates (``design.py``), and releases them -- noised
under DP, charged, audited, encrypted under the analyst's key -- one release per call
(``fitting.py``). The SDK (``veil.models``) decrypts and solves.
"""

from .fitting import MAX_ITERATIONS, ModelFitting

__all__ = ["ModelFitting", "MAX_ITERATIONS"]
