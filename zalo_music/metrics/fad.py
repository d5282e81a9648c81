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
    # scipy >= 1.10 dropped `disp`; errors come back as NaN/inf entries, which the caller handles.
    with np.errstate(all="ignore"):
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


def fad_infinity(gen_emb: np.ndarray, ref: GaussianStats, sizes: tp.Sequence[int] | None = None,
                 draws: int = 1, seed: int = 0) -> dict:
    """FAD extrapolated to an infinite generated set (Gui et al., 2024, "Adapting FAD for ...").

    FAD estimated on N samples is biased upwards roughly by c/N. We compute it on subsets of several sizes,
    fit FAD(N) = a + b / N by least squares and report a, the value at 1/N = 0.

    Args:
        gen_emb: `[N, D]` embeddings of the generated set.
        ref: reference statistics.
        sizes: subset sizes (default: 10 sizes evenly spaced from N/5 (at least 2) to N).
        draws: subsets drawn per size (their FADs are averaged).
        seed: seed of the subset draws (result is deterministic).
    Returns:
        `{"fad_inf": a, "slope": b, "r2": fit quality, "sizes": [...], "fads": [...]}`.
    """
    x = np.asarray(gen_emb, dtype=np.float64)
    n = x.shape[0]
    if sizes is None:
        lo = max(2, n // 5)
        sizes = sorted({int(round(s)) for s in np.linspace(lo, n, num=10)})
    sizes = [int(s) for s in sizes if 2 <= int(s) <= n]
    if len(sizes) < 2:
        raise ValueError(f"FAD-inf needs at least 2 subset sizes between 2 and N={n}")
    rng = np.random.default_rng(seed)
    fads = []
    for size in sizes:
        vals = []
        for _ in range(draws if size < n else 1):
            idx = rng.choice(n, size=size, replace=False) if size < n else np.arange(n)
            vals.append(fad_from_stats(GaussianStats.from_embeddings(x[idx]), ref))
        fads.append(float(np.mean(vals)))
    inv = 1.0 / np.asarray(sizes, dtype=np.float64)
    design = np.stack([np.ones_like(inv), inv], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(fads), rcond=None)
    pred = design @ np.array([a, b])
    ss_res = float(((np.asarray(fads) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(fads) - np.mean(fads)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"fad_inf": float(a), "slope": float(b), "r2": r2, "sizes": sizes, "fads": fads}
