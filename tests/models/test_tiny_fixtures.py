"""The offline tiny-model builders: deterministic, saved complete, with a real sub-word tokenizer."""

from __future__ import annotations

from safetensors.torch import load_file

from tests.fixtures.tiny_models import build_tiny_llava


def test_saved_folders_are_complete(tiny_model_dirs):
    assert set(tiny_model_dirs) == {"llava", "qwen2_vl", "idefics3"}
    for folder in tiny_model_dirs.values():
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
        assert names & {"processor_config.json", "preprocessor_config.json"}


def test_build_is_deterministic(tiny_llava_dir, tmp_path):
    again = load_file(build_tiny_llava(tmp_path / "again") / "model.safetensors")
    first = load_file(tiny_llava_dir / "model.safetensors")
    assert first.keys() == again.keys() and all(first[k].equal(again[k]) for k in first)
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (tiny_llava_dir / "tokenizer.json").read_text()


def test_tokenizer_has_subwords_and_leading_space_variants(tiny_model_dirs):
    from transformers import AutoTokenizer

    for folder in tiny_model_dirs.values():
        tok = AutoTokenizer.from_pretrained(folder)
        assert len(tok.tokenize(" hotdog")) > 1
        assert tok.tokenize(" dog") == ["Ġdog"] and tok.tokenize("dog") == ["dog"]
        assert tok.pad_token_id is not None and tok.eos_token_id is not None
        assert tok.decode(tok(" a dog on the grass", add_special_tokens=False)["input_ids"]) == " a dog on the grass"
