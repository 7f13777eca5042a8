"""Regression fitted inside a node (issue 18): the node releases encrypted aggregates of the
design matrix it builds; this module decrypts them with the analyst's key and solves.

- OLS (``family="gaussian"``): one release of n, X'X, X'y, y'y; beta = (X'X)^-1 X'y, the
  residual sum of squares from the same statistics, classical standard errors.
- Poisson (``family="poisson"``, log link): the same Newton steps with W = mu.
- Logistic (``family="binomial"``): Newton-Raphson from beta = 0; each step is one release of
  the Hessian X'WX and the gradient X'(y - p) at the current beta; it stops when the step is
  below ``tol`` (relative) or at the node's iteration cap. Standard errors from the last Hessian.

Under DP the statistics carry noise of the scales the node declares (``noise_scales``); the
standard errors add, to first order (delta method), the variance that noise puts on the
coefficients: for OLS through X'X and X'y, for logistic through the last gradient. The noise's
effect is only approximately linear when it is large next to the statistics (small n, small ε),
and a noisy X'X may even fail to be positive definite (then some standard errors are NaN).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .crypto import Ciphertext, PackingLayout, decrypt_packed

if TYPE_CHECKING:
    import pandas as pd

    from .crypto import PrivateKey


# Under DP every Newton step pays ε and its noise keeps the step from shrinking below ``tol``:
# by default a DP logistic fit takes this many steps (from 0, enough for the usual GLM), unless
# ``max_iter`` says otherwise.
DP_NEWTON_STEPS = 6


def model_digest(dataset: str, formula: str, family: str, coefficients: list[float], iteration: int, fit_id: str,
                 key_fingerprint: str) -> str:
    """SHA-256 of what a model release computes, for whom (the node logs it; a receipt names it):
    the same bytes on both sides, so the SDK can check a receipt is for the model it asked for."""
    text = json.dumps([dataset.removeprefix("datasets/").lower(), formula, family, [float(c) for c in coefficients],
                       int(iteration), fit_id, key_fingerprint], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ModelRelease:
    """One decrypted release of a model's statistics."""

    terms: list[str]
    response: str
    n: float
    matrix: np.ndarray  # X'X (OLS) or the Hessian X'WX (logistic)
    vector: np.ndarray  # X'y (OLS) or the gradient X'(y - p) (logistic)
    yty: float  # OLS only
    disclosure: str
    epsilon: float
    noise_scales: list[float]
    digest: str
    max_iterations: int
    consent_snapshot: str = ""  # a consent dataset: the snapshot the statistics were computed on


def decode_release(msg: Any, sk: PrivateKey, family: str) -> ModelRelease:
    """Decrypt ``ModelStatistics`` and rebuild the symmetric matrix and the vector."""
    c = msg.cells
    pk = sk.public_key
    low = int(c.slot_offset)
    layout = PackingLayout(c.slot_bits, c.slots_per_ciphertext, low, low + (1 << c.slot_bits) - 1, 1, pk.bits)
    cts = [Ciphertext.from_bytes(pk, b) for b in c.ciphertexts]
    cells = decrypt_packed(sk, cts, layout, c.cell_count)
    scale = float(2**msg.fraction_bits)
    values = [v / scale for v in cells]
    p = len(msg.terms)
    expected = 1 + p * (p + 1) // 2 + p + (1 if family == "gaussian" else 0)
    if len(values) != expected:
        raise ValueError("the release holds a different number of statistics than its terms imply")
    m = np.zeros((p, p))
    k = 1
    for i in range(p):
        for j in range(i, p):
            m[i, j] = m[j, i] = values[k]
            k += 1
    vec = np.array(values[k:k + p])
    yty = values[k + p] if family == "gaussian" else 0.0
    return ModelRelease(list(msg.terms), msg.response, values[0], m, vec, yty, msg.disclosure_mode, msg.epsilon,
                        list(msg.noise_scales), msg.release_digest, msg.max_iterations, msg.consent_snapshot)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _normal_ppf(q: float) -> float:
    lo, hi = -40.0, 40.0
    for _ in range(200):  # bisection: plenty for double precision
        mid = (lo + hi) / 2
        if _normal_cdf(mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _t_dist(df: float):
    try:
        from scipy import stats  # present wherever statsmodels is; optional for the SDK
        return stats.t(df)
    except ImportError:  # large n: the t distribution is the normal one to many digits
        return None


@dataclass
class RegressionResults:
    """Reads like statsmodels' results: params, bse, tvalues, pvalues, conf_int(), nobs, summary()."""

    family: str
    formula: str
    dataset: str
    params: pd.Series
    bse: pd.Series
    nobs: float
    df_model: float
    df_resid: float
    cov_params_matrix: pd.DataFrame
    disclosure: str
    epsilon_spent: float
    noise_scales: list[list[float]] = field(default_factory=list)  # per release, in release order
    iterations: int = 1
    converged: bool = True
    scale: float = 1.0
    release_digests: list[str] = field(default_factory=list)
    receipt: Any = None  # veil.audit.Receipt of the final release, checked (federated: the coordinator's)
    # A dataset whose basis is consent: each release's consent snapshot digest, in release order.
    consent_snapshots: list[str] = field(default_factory=list)

    @property
    def tvalues(self) -> pd.Series:
        return self.params / self.bse

    @property
    def _use_t(self) -> bool:
        return self.family == "gaussian"

    @property
    def pvalues(self) -> pd.Series:
        t = self.tvalues
        dist = _t_dist(self.df_resid) if self._use_t else None
        if dist is not None:
            return t.abs().map(lambda v: 2 * float(dist.sf(v)))
        return t.abs().map(lambda v: 2 * (1 - _normal_cdf(v)))

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        import pandas as pd

        dist = _t_dist(self.df_resid) if self._use_t else None
        q = float(dist.ppf(1 - alpha / 2)) if dist is not None else _normal_ppf(1 - alpha / 2)
        return pd.DataFrame({0: self.params - q * self.bse, 1: self.params + q * self.bse})

    def cov_params(self) -> pd.DataFrame:
        return self.cov_params_matrix

    def summary(self) -> str:
        ci = self.conf_int()
        name = {"gaussian": "OLS", "binomial": "Logit", "poisson": "Poisson"}[self.family]
        lines = [f"{name} regression results (fitted inside the node; {self.disclosure} release)",
                 f"Formula: {self.formula}    Dataset: {self.dataset}",
                 f"No. Observations: {self.nobs:.0f}    Df Residuals: {self.df_resid:.0f}    "
                 f"Df Model: {self.df_model:.0f}    Iterations: {self.iterations}",
                 f"epsilon spent: {self.epsilon_spent:g}" if self.disclosure == "dp" else "exact statistics",
                 "", f"{'':28s}{'coef':>12s}{'std err':>12s}{'t' if self._use_t else 'z':>9s}{'P>|t|':>9s}"
                 f"{'[0.025':>12s}{'0.975]':>12s}"]
        pv = self.pvalues
        for k in self.params.index:
            lines.append(f"{k[:28]:28s}{self.params[k]:12.4f}{self.bse[k]:12.4f}{self.tvalues[k]:9.3f}"
                         f"{pv[k]:9.3f}{ci.loc[k, 0]:12.4f}{ci.loc[k, 1]:12.4f}")
        if self.disclosure == "dp":
            lines += ["", "Under DP the statistics carry declared discrete-Laplace noise; the standard errors "
                          "above include its first-order effect."]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        ci = self.conf_int()
        return {"family": self.family, "formula": self.formula, "dataset": self.dataset, "nobs": self.nobs,
                "df_resid": self.df_resid, "disclosure": self.disclosure, "epsilon_spent": self.epsilon_spent,
                "iterations": self.iterations, "converged": self.converged,
                "params": {k: float(v) for k, v in self.params.items()},
                "bse": {k: float(v) for k, v in self.bse.items()},
                "conf_int": {k: [float(ci.loc[k, 0]), float(ci.loc[k, 1])] for k in self.params.index},
                "release_digests": list(self.release_digests)}


def noise_covariance_ols(matrix: np.ndarray, vector: np.ndarray, scales: list[float]) -> np.ndarray:
    """First-order covariance that the declared noise adds to beta = A^-1 b (delta method): each
    statistic k of the upper triangle of A and of b moves beta by g_k times its noise, whose
    variance is 2 s_k^2 (discrete Laplace at these scales). ``scales`` in release order (n first)."""
    p = len(vector)
    inv = np.linalg.inv(matrix)
    beta = inv @ vector
    cov = np.zeros((p, p))
    k = 1
    for i in range(p):
        for j in range(i, p):
            g = -(inv[:, i] * beta[j] + (inv[:, j] * beta[i] if i != j else 0.0))
            cov += np.outer(g, g) * 2 * scales[k] ** 2
            k += 1
    for i in range(p):
        cov += np.outer(inv[:, i], inv[:, i]) * 2 * scales[k] ** 2
        k += 1
    return cov


def noise_covariance_newton(hessian: np.ndarray, scales: list[float]) -> np.ndarray:
    """First-order covariance the gradient's declared noise adds to the last Newton step's
    beta (H^-1 e_g; the Hessian's noise multiplies a gradient that is ~0 at convergence)."""
    p = hessian.shape[0]
    inv = np.linalg.inv(hessian)
    grad = np.array(scales[1 + p * (p + 1) // 2: 1 + p * (p + 1) // 2 + p])
    return inv @ np.diag(2 * grad ** 2) @ inv


def ols_results(rel: ModelRelease, *, formula: str, dataset: str) -> RegressionResults:
    import pandas as pd

    p = len(rel.terms)
    inv = np.linalg.inv(rel.matrix)
    beta = np.linalg.solve(rel.matrix, rel.vector)
    rss = rel.yty - 2 * beta @ rel.vector + beta @ rel.matrix @ beta
    df_resid = rel.n - p
    sigma2 = rss / df_resid
    cov = sigma2 * inv
    if rel.noise_scales:  # DP: the noise's own share of the error, where the delta method knows it
        cov = cov + noise_covariance_ols(rel.matrix, rel.vector, rel.noise_scales)
    index = rel.terms
    has_const = "Intercept" in index
    return RegressionResults(
        "gaussian", formula, dataset, pd.Series(beta, index=index), pd.Series(np.sqrt(np.diag(cov)), index=index),
        rel.n, p - (1 if has_const else 0), df_resid, pd.DataFrame(cov, index=index, columns=index),
        rel.disclosure, rel.epsilon, [rel.noise_scales], 1, True, float(sigma2), [rel.digest],
        consent_snapshots=[rel.consent_snapshot] if rel.consent_snapshot else [])


class SingularDesign(ValueError):
    """X'X (or the Hessian) cannot be inverted: collinear terms, a constant column, or a
    category no row has. Drop a term and fit again."""


def fit(call, sk: PrivateKey, request_of, *, formula: str, dataset: str, family: str,
        tol: float = 1e-10, max_iter: int | None = None, check=None) -> RegressionResults:
    try:
        return _fit(call, sk, request_of, formula=formula, dataset=dataset, family=family, tol=tol,
                    max_iter=max_iter, check=check)
    except np.linalg.LinAlgError:
        raise SingularDesign("the model's X'X (or Hessian) is singular: its terms are collinear, a column is "
                             "constant, or a category has no rows; drop a term and fit again") from None


def _fit(call, sk: PrivateKey, request_of, *, formula: str, dataset: str, family: str,
         tol: float = 1e-10, max_iter: int | None = None, check=None) -> RegressionResults:
    """Drive a fit: ``call(request)`` sends one ComputeModelStatistics request, ``request_of``
    builds it from (fit_id, iteration, coefficients); ``check(request, response)``, if given,
    checks the final release (its receipt) before the results are returned."""
    import pandas as pd

    fit_id = str(uuid.uuid4())
    if family == "gaussian":
        request = request_of(fit_id, 0, [])
        msg = call(request)
        rel = decode_release(msg, sk, family)
        out = ols_results(rel, formula=formula, dataset=dataset)
        out.receipt = check(request, msg) if check is not None else None
        return out
    if family not in ("binomial", "poisson"):  # the node names the families it fits (MODEL_FAMILY_UNSUPPORTED)
        call(request_of(fit_id, 0, []))
        raise ValueError("family must be 'gaussian', 'binomial' or 'poisson'")
    beta: np.ndarray | None = None
    releases: list[ModelRelease] = []
    converged = False
    iteration = 0
    while True:
        request = request_of(fit_id, iteration, [] if beta is None else beta.tolist())
        msg = call(request)
        rel = decode_release(msg, sk, family)
        releases.append(rel)
        if beta is None:
            beta = np.zeros(len(rel.terms))
        default = DP_NEWTON_STEPS if rel.disclosure == "dp" else rel.max_iterations
        cap = min(default if max_iter is None else max_iter, rel.max_iterations)
        step = np.linalg.solve(rel.matrix, rel.vector)
        beta = beta + step
        iteration += 1
        if np.max(np.abs(step) / (1.0 + np.abs(beta))) < tol:
            converged = True
            break
        if iteration >= cap:
            break
    receipt = check(request, msg) if check is not None else None  # the final release's
    last = releases[-1]
    cov = np.linalg.inv(last.matrix)  # the information at the last step (within tol of the final beta)
    if last.noise_scales:  # DP: plus the last gradient's declared noise
        cov = cov + noise_covariance_newton(last.matrix, last.noise_scales)
    index = last.terms
    p = len(index)
    return RegressionResults(
        family, formula, dataset, pd.Series(beta, index=index), pd.Series(np.sqrt(np.diag(cov)), index=index),
        last.n, p - (1 if "Intercept" in index else 0), last.n - p, pd.DataFrame(cov, index=index, columns=index),
        last.disclosure, sum(r.epsilon for r in releases), [r.noise_scales for r in releases], iteration, converged,
        1.0, [r.digest for r in releases], receipt,
        consent_snapshots=[r.consent_snapshot for r in releases if r.consent_snapshot])
