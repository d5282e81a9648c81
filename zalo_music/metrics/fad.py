"""Fréchet Audio Distance on embedding sets, FAS = exp(-FAD / tau), FAD-infinity and CLAS.

FAD fits a Gaussian to each embedding set and measures
    FAD = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)).
Everything is computed in float64; the matrix square root is scipy's `sqrtm` with the usual safeguards
(rank-deficient covariances: a small ridge on both diagonals; round-off imaginary parts: dropped when small,
an error when not).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing as tp
import warnings

import numpy as np
from scipy import linalg

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class GaussianStats:
    """Mean, covariance and sample count of an embedding set.

    Args:
        mu: `[D]` mean.
        sigma: `[D, D]` unbiased covariance (zeros for fewer than 2 samples).
        n: number of embeddings.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_embeddings(cls, emb: np.ndarray) -> GaussianStats:
        """Fit the Gaussian of `[N, D]` embeddings.

        Args:
            emb: the embeddings (N >= 1).
        """
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"need a non-empty [N, D] embedding matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN/inf")
        mu = x.mean(axis=0)
        if x.shape[0] < 2:
            logger.warning("FAD on a single embedding: covariance taken as 0")
            sigma = np.zeros((x.shape[1], x.shape[1]))
        else:
            sigma = np.cov(x, rowvar=False)
        return cls(mu=mu, sigma=np.atleast_2d(sigma), n=int(x.shape[0]))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1: `[D]` mean of the first Gaussian.
        sigma1: `[D, D]` covariance of the first Gaussian.
        mu2: `[D]` mean of the second Gaussian.
        sigma2: `[D, D]` covariance of the second Gaussian.
        eps: ridge added to both diagonals when the product's square root is not finite (singular covariances,
            e.g. fewer samples than dimensions).
        imag_tol: largest imaginary part of the square root's diagonal accepted as round-off.
    Returns:
        The distance (>= 0 up to round-off; clamped at 0).
    Raises:
        ValueError: on shape mismatch or a genuinely complex square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        logger.info("FAD: singular covariance product, adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > imag_tol:
            raise ValueError(f"FAD: matrix square root has an imaginary component {worst:.3g}")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def _sqrtm(m: np.ndarray) -> np.ndarray:
    # scipy >= 1.10 dropped `disp`; errors come back as NaN/inf entries, which the caller handles (ridge), so
    # scipy's "singular matrix" warning is expected here (N < dim) and silenced.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        try:
            return linalg.sqrtm(m)
        except (ValueError, np.linalg.LinAlgError):
            return np.full_like(m, np.nan)


def fad_from_stats(gen: GaussianStats, ref: GaussianStats) -> float:
    """FAD between two fitted Gaussians.

    Args:
        gen: statistics of the generated set.
        ref: statistics of the reference set.
    """
    return frechet_distance(gen.mu, gen.sigma, ref.mu, ref.sigma)


def fas(fad: float, tau: float = 1.0) -> float:
    """Fréchet Audio Score: exp(-FAD / tau), in (0, 1], 1 for identical distributions.

    Args:
        fad: a Fréchet audio distance.
        tau: temperature (> 0): the FAD at which FAS drops to 1/e.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return float(math.exp(-fad / tau))


def clas(clap: float, fas_value: float) -> float:
    """Zalo AI 2023 score: (CLAP + FAS) / 2.

    Args:
        clap: mean text-audio CLAP cosine.
        fas_value: Fréchet audio score.
    """
    return (float(clap) + float(fas_value)) / 2.0


#: fadtk's FAD-inf defaults (Gui et al. 2024, github.com/microsoft/fadtk): 25 sizes from 500 to N, bootstrap.
BOOTSTRAP_MIN_N = 500
BOOTSTRAP_STEPS = 25
FAD_INF_METHODS = ("subsets", "bootstrap")


def fad_inf_sizes(n: int, method: str = "subsets") -> list[int]:
    """Default subset sizes of `fad_infinity`.

    Args:
        n: size of the generated set.
        method: "subsets": 10 sizes evenly spaced from N/5 (at least 2) to N, drawn without replacement;
            "bootstrap": fadtk's 25 sizes evenly spaced from 500 to N (with replacement, so sizes above N are
            fine when N < 500).
    """
    if method == "bootstrap":
        return [int(s) for s in np.linspace(BOOTSTRAP_MIN_N, n, num=BOOTSTRAP_STEPS)]
    lo = max(2, n // 5)
    return sorted({int(round(s)) for s in np.linspace(lo, n, num=10)})


def fad_infinity(gen_emb: np.ndarray, ref: GaussianStats, sizes: tp.Sequence[int] | None = None,
                 draws: int = 1, seed: int = 0, method: str = "subsets") -> dict:
    """FAD extrapolated to an infinite generated set (FAD-inf; Gui et al., 2024, "Adapting FAD for ...").

    The FAD of N samples is biased upwards by roughly c/N (the sample covariance's error adds to the trace
    term; the bias is large while N is below the embedding dimension, 512 for CLAP). We compute FAD on
    subsets of several sizes, fit FAD(N) = a + b / N by least squares and report the intercept a, the value
    at 1/N = 0. Two estimators:

    - "subsets" (default): subsets drawn *without* replacement, sizes N/5..N; the full set is one point.
    - "bootstrap": fadtk's estimator, subsets drawn *with* replacement at 25 sizes from 500 to N; use it to
      compare with published FAD-inf numbers. Resampling with replacement repeats items, which lowers the
      effective size of each subset; the two estimators agree only approximately.

    Args:
        gen_emb: `[N, D]` embeddings of the generated set.
        ref: reference statistics (its own small-N bias is not removed).
        sizes: subset sizes (default: `fad_inf_sizes(N, method)`).
        draws: subsets drawn per size (their FADs are averaged).
        seed: seed of the subset draws (result is deterministic).
        method: "subsets" or "bootstrap".
    Returns:
        `{"fad_inf": a, "slope": b, "r2": fit quality, "sizes": [...], "fads": [...], "method": ...,
        "warnings": [...]}`; a warning is given when the smallest subset is below the embedding dimension.
    """
    if method not in FAD_INF_METHODS:
        raise ValueError(f"FAD-inf method must be one of {FAD_INF_METHODS}, got {method!r}")
    x = np.asarray(gen_emb, dtype=np.float64)
    n, dim = x.shape
    with_replacement = method == "bootstrap"
    if sizes is None:
        sizes = fad_inf_sizes(n, method)
    sizes = [int(s) for s in sizes if 2 <= int(s) and (with_replacement or int(s) <= n)]
    if len(set(sizes)) < 2:
        raise ValueError(f"FAD-inf needs at least 2 distinct subset sizes of at least 2"
                         f"{'' if with_replacement else f' and at most N={n}'}, got {sizes}")
    rng = np.random.default_rng(seed)
    fads = []
    for size in sizes:
        vals = []
        if not with_replacement and size == n:
            vals.append(fad_from_stats(GaussianStats.from_embeddings(x), ref))
        else:
            for _ in range(draws):
                idx = rng.choice(n, size=size, replace=with_replacement)
                vals.append(fad_from_stats(GaussianStats.from_embeddings(x[idx]), ref))
        fads.append(float(np.mean(vals)))
    inv = 1.0 / np.asarray(sizes, dtype=np.float64)
    design = np.stack([np.ones_like(inv), inv], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(fads), rcond=None)
    pred = design @ np.array([a, b])
    ss_res = float(((np.asarray(fads) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(fads) - np.mean(fads)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    notes = []
    if min(sizes) < dim:
        notes.append(f"FAD-inf: the smallest subset ({min(sizes)}) is below the embedding dimension ({dim}): "
                        "those FADs come from rank-deficient covariances and the 1/N fit is less reliable; "
                        f"use at least {dim} clips per subset (more generated clips) where you can")
        logger.warning(notes[-1])
    return {"fad_inf": float(a), "slope": float(b), "r2": r2, "sizes": sizes, "fads": fads, "method": method,
            "warnings": notes}
