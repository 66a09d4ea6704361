"""Classes the custom-method tests name as ``custom_method_fixtures:ClassName`` (method specs)."""

import numpy as np

from mmconcepts.decompose import ConceptDictionary, PCA


class Projection:
    """The first K coordinates as concepts (a hand-checkable scikit-learn-style estimator)."""

    def __init__(self, n_components=2, random_state=0, scale=1.0):
        self.n_components, self.random_state, self.scale = n_components, random_state, scale

    def fit(self, X, y=None):
        X = np.asarray(X)
        self.components_ = self.scale * np.eye(self.n_components, X.shape[1], dtype=np.float32)
        self.offset_ = X.mean(axis=0)
        self.labels_ = np.arange(X.shape[0]) % 2
        self.seen_ = int(X.shape[0])
        self.note_ = "fitted"
        return self

    def transform(self, X):
        return (np.asarray(X) - self.offset_) @ self.components_.T


class NoComponents(Projection):
    def fit(self, X, y=None):
        return self


class WrongShape(Projection):
    def transform(self, X):
        return np.zeros((len(X), self.n_components + 1))


class ObjectState(Projection):
    def fit(self, X, y=None):
        super().fit(X)
        self.helper_ = object()
        return self


class NoTransform:
    def __init__(self, n_components=2):
        self.n_components = n_components

    def fit(self, X, y=None):
        return self


class NoSize:
    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


class OwnPCA(PCA):
    """A ConceptDictionary subclass of the user's (no method name of its own)."""


def not_a_class():
    return None


class _Base(ConceptDictionary):
    pass
