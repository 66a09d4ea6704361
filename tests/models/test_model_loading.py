"""``load_model`` on good and bad input: every problem is a one-line MMConceptsError naming the fix."""

from __future__ import annotations

import inspect
import shutil

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.models import ADAPTERS, DEFAULT_MODEL_DIR, EMBEDDED_MODEL, load_model
from mmconcepts.models import loading


def error_of(*args, **kwargs) -> str:
    with pytest.raises(MMConceptsError) as info:
        load_model(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_registry_is_keyed_by_model_type():
    assert {"llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm"} <= set(ADAPTERS)
    assert ADAPTERS["smolvlm"] is ADAPTERS["idefics3"] and ADAPTERS["qwen2_5_vl"] is ADAPTERS["qwen2_vl"]


def test_safe_defaults():
    params = inspect.signature(load_model).parameters
    assert params["trust_remote_code"].default is False
    assert (params["device"].default, params["dtype"].default, params["revision"].default) == ("auto", "float32",
                                                                                               None)


def test_local_folder_as_str_and_path(tiny_llava_dir):
    assert load_model(str(tiny_llava_dir), device="cpu").model_id == str(tiny_llava_dir)
    assert load_model(tiny_llava_dir, device="auto").family == "llava"


def test_missing_folder(tmp_path):
    assert "does not exist" in error_of(str(tmp_path / "nope"), device="cpu")
    assert "does not exist" in error_of(tmp_path / "nope", device="cpu")


def test_unknown_hub_id_offline():
    message = error_of("nobody-here/no-such-model", device="cpu")
    assert message == ("could not load model 'nobody-here/no-such-model': not a local folder and not in the "
                       "Hugging Face cache; download it first or pass a local path")


def test_file_and_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert "is a file" in error_of(tmp_path / "weights.bin", device="cpu")
    assert "no config.json" in error_of(tmp_path, device="cpu")


@pytest.mark.parametrize("keep", [("config.json", "model.safetensors"),
                                  ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")])
def test_folder_without_processor(tiny_llava_dir, tmp_path, keep):
    for name in keep:
        shutil.copy(tiny_llava_dir / name, tmp_path / name)
    assert "has no processor" in error_of(tmp_path, device="cpu")


def test_unsupported_architecture(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=10, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path)
    message = error_of(tmp_path, device="cpu")
    assert "unsupported architecture LlamaForCausalLM (model_type 'llama')" in message
    assert "llava" in message and "qwen2_vl" in message and "idefics3" in message


def test_bad_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert "could not read the config" in error_of(tmp_path, device="cpu")


@pytest.mark.parametrize("kwargs, text", [({"device": "tpu"}, "unknown device 'tpu': choose auto, cpu, cuda or cuda:N"),
                                          ({"dtype": "int8"}, "unknown dtype 'int8': choose one of float32, "
                                                              "bfloat16, float16")])
def test_bad_device_and_dtype(tiny_llava_dir, kwargs, text):
    assert text in error_of(tiny_llava_dir, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable(tiny_llava_dir):
    assert "CUDA is not available" in error_of(tiny_llava_dir, device="cuda")


def test_default_model_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "shapesworld-llava")
    message = error_of(None, device="cpu")
    assert "shipped default model is missing" in message and "--model" in message


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="the shipped model is not built yet")
def test_default_model_loads():
    adapter = load_model(device="cpu")
    assert adapter.family == "llava" and adapter.model_id == EMBEDDED_MODEL
    assert adapter.prompt()


def test_hub_errors_are_told_apart_by_their_types(monkeypatch):
    """transformers wraps huggingface_hub's errors in an OSError: the cause's type picks the message."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from mmconcepts.models import loading

    monkeypatch.setattr(loading, "_is_offline", lambda: False)

    def wrapped(cause):
        try:
            try:
                raise cause
            except Exception as exc:
                raise OSError("org/m is not a local folder and is not a valid model identifier") from exc
        except OSError as outer:
            return str(loading._hub_error("org/m", outer))

    response = type("R", (), {"headers": {}, "status_code": 404, "request": None})()
    assert "not a model on the Hugging Face hub" in wrapped(RepositoryNotFoundError("x", response=response))
    assert "gated" in wrapped(GatedRepoError("x", response=response))
    assert "revision not found" in wrapped(RevisionNotFoundError("x", response=response))
    assert "not in the Hugging Face cache" in wrapped(ConnectionError("refused"))
    # the message alone decides nothing: an unknown cause keeps its own first line
    assert wrapped(RuntimeError("disk full")).endswith("org/m is not a local folder and is not a valid model identifier")
