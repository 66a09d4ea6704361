"""Pytest set-up shared by the tests and the docstring examples of ``src/mmconcepts`` (``--doctest-modules``).

Every docstring example runs in a fresh temp folder as its working directory, so an example writes its files
where a user would ("runs/circle", "shapes/train") without touching the checkout. The suite runs offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub are imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

#: modules that must not be imported to collect examples: the CLI entry point runs the CLI, the Triton kernel
#: needs triton (neither has examples)
collect_ignore = ["src/mmconcepts/__main__.py", "src/mmconcepts/decompose/_hals_triton.py"]


@pytest.fixture(autouse=True)
def _examples_in_temp_folder(request, monkeypatch):
    """A docstring example's working directory is a fresh temp folder (plain tests are left as they are)."""
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
