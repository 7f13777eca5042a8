"""A dataset version's quality profile as the SDK hands it out (catalog and listing queue)."""

from __future__ import annotations

from .v1 import catalog_pb2


def quality_dict(q: catalog_pb2.QualityProfile) -> dict:
    """A ``QualityProfile`` as a plain dict, in the certificate's shape: rows, mode, (DP) epsilon
    and noise_scale, columns {name: {missing, out_of_range, out_of_domain, distinct}} (shares as
    decimal text; measures that do not apply left out), and freshness when declared."""
    out: dict = {"rows": q.rows, "mode": q.mode, "columns": {
        c.column: {k: getattr(c, k) for k in ("missing", "out_of_range", "out_of_domain", "distinct") if getattr(c, k)}
        for c in q.columns}}
    if q.mode == "dp":
        out.update(epsilon=q.epsilon, noise_scale=q.noise_scale)
    if q.freshness_column:
        out["freshness"] = {"column": q.freshness_column, "within_30d": q.within_30d, "within_365d": q.within_365d}
    return out
