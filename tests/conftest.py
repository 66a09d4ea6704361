"""Shared pytest fixtures. The suite runs offline: no request ever goes to the Hugging Face hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub are imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # so `tests.fixtures` imports however pytest is started
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """Tiny random models of each family (llava, qwen2_vl, idefics3), built once: family -> folder."""
    from tests.fixtures.tiny_models import BUILDERS

    root = tmp_path_factory.mktemp("tiny_models")
    return {family: build(root / family) for family, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_model_dirs):
    """Folder of the tiny LLaVA (``LlavaForConditionalGeneration`` + ``LlavaProcessor``)."""
    return tiny_model_dirs["llava"]


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tiny_model_dirs):
    """Folder of the tiny Qwen2-VL (``Qwen2VLForConditionalGeneration`` + ``Qwen2VLProcessor``)."""
    return tiny_model_dirs["qwen2_vl"]


@pytest.fixture(scope="session")
def tiny_idefics3_dir(tiny_model_dirs):
    """Folder of the tiny Idefics3 / SmolVLM (``Idefics3ForConditionalGeneration`` + ``Idefics3Processor``)."""
    return tiny_model_dirs["idefics3"]


@pytest.fixture(scope="session")
def tiny_smolvlm_dir(tmp_path_factory):
    """Folder of a tiny SmolVLM2-style model (model_type ``smolvlm``, ``SmolVLMProcessor``); built on demand."""
    from tests.fixtures.tiny_models import build_tiny_smolvlm

    return build_tiny_smolvlm(tmp_path_factory.mktemp("tiny_smolvlm"))
