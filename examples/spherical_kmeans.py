"""A dictionary method of your own, for ``mmconcepts benchmark --methods spherical_kmeans:SphericalKMeans``.

Any class with scikit-learn's shape joins the benchmark: a constructor taking ``n_components`` (or
``n_concepts``) and ``random_state`` (or ``seed``), ``fit(X)`` setting ``components_`` (K x D), and
``transform(X)`` returning N x K activations. Its fitted state (public attributes ending in ``_``) must be
NumPy arrays or plain numbers, so that a concepts folder saves it without pickling. Run from this folder,
or put it on ``PYTHONPATH``:

    PYTHONPATH=examples mmconcepts benchmark --methods semi-nmf,spherical_kmeans:SphericalKMeans
"""

import numpy as np


class SphericalKMeans:
    """Cosine k-means of the centred features: unit-norm centroids, activation the positive projection."""

    def __init__(self, n_components=20, random_state=0, max_iter=30):
        self.n_components, self.random_state, self.max_iter = n_components, random_state, max_iter

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        unit = _unit(X - self.mean_)
        rng = np.random.default_rng(self.random_state)
        centroids = unit[rng.choice(len(unit), self.n_components, replace=False)]
        for self.n_iter_ in range(1, self.max_iter + 1):
            members = np.eye(self.n_components)[(unit @ centroids.T).argmax(axis=1)]  # N x K, one-hot
            centroids, previous = _unit(members.T @ unit + 1e-6 * centroids), centroids  # an empty one stays
            if np.allclose(centroids, previous):
                break
        self.components_ = centroids
        return self

    def transform(self, X):
        return np.maximum((np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T, 0.0)


def _unit(A):
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
