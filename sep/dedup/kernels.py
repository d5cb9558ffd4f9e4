"""UMAP's small-data distances, compiled: imported only inside a fit, as it imports numba and umap.

Below `EXACT_NEIGHBOURS` stories UMAP computes every pairwise cosine distance through scikit-learn,
which calls umap's compiled `cosine` once per pair from Python: 1.0-1.5 s for the demo's 905
stories. The same function in one compiled loop gives the same float32 matrix, bit for bit (a test
holds it), in 0.2 s; `keep_compiled` keeps its machine code with UMAP's."""

from __future__ import annotations

import numba
import numpy as np
from umap.distances import cosine


@numba.njit(nogil=True)
def cosine_matrix(X: np.ndarray) -> np.ndarray:
    """What `sklearn.metrics.pairwise_distances(X, metric=umap.distances.cosine)` returns."""
    n = X.shape[0]
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = cosine(X[i], X[j])
            out[j, i] = out[i, j]
        out[i, i] = cosine(X[i], X[i])
    return out
