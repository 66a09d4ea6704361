"""Fixtures for the decompose tests."""

import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_sklearn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        yield
