"""``load_head``: the unembedding and final norm read alone from the checkpoint, everything else on ``meta``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.decoding import WordGrounder, concept_scores
from mmconcepts.models import DEFAULT_MODEL_DIR, EMBEDDED_MODEL, load_model
from mmconcepts.models import head as head_module
from mmconcepts.models.head import load_head, match_key

FAMILIES = ("llava", "qwen2_vl", "idefics3")


def copy_processor(src, dst):
    """Copy a model folder without its weights (config and processor files only)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith("model") and path.name != "pytorch_model.bin":
            shutil.copy(path, dst / path.name)
    return dst


def rewrite(src, dst, rename=None, drop=(), add=None):
    """``src`` copied to ``dst`` with its single safetensors file's keys renamed / dropped / added."""
    copy_processor(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    tensors = {(rename(k) if rename else k): v for k, v in tensors.items() if k not in drop}
    tensors.update(add or {})
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def random_concepts(adapter, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = adapter.hidden_size
    return torch.randn(k, d, generator=g), torch.randn(d, generator=g), torch.rand(k, generator=g) * 3


def assert_same_head(head, full):
    assert head.head_only is True
    assert torch.equal(head.lm_head().weight, full.lm_head().weight)
    assert torch.equal(head.final_norm().weight, full.final_norm().weight)
    U, base, strengths = random_concepts(full)
    for norm in (True, False):
        ours = concept_scores(U, head.lm_head(), head.final_norm() if norm else None, decode="effect",
                              base=base, strengths=strengths)
        theirs = concept_scores(U, full.lm_head(), full.final_norm() if norm else None, decode="effect",
                                base=base, strengths=strengths)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-8)  # same weights; BLAS paths may differ


def real_parameters(adapter) -> set[str]:
    return {n for n, p in adapter.model.named_parameters(remove_duplicate=False) if not p.is_meta}


# ---- each family ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_head_equals_full_model(family, tiny_model_dirs, tiny_adapters):
    head, full = load_head(tiny_model_dirs[family]), tiny_adapters[family]
    assert type(head) is type(full) and head.family == full.family
    assert_same_head(head, full)
    assert (head.num_layers, head.hidden_size, head.vocab_size) == (full.num_layers, full.hidden_size,
                                                                    full.vocab_size)
    assert head.model_id == full.model_id and head.commit is None
    assert head.resolve_layer(-1) == full.resolve_layer(-1) and head.resolve_layers("0,norm") == ["0", "norm"]
    assert not head.model.training
    assert not getattr(full, "head_only", False)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_head_and_norm_are_materialised(family, tiny_model_dirs):
    head = load_head(tiny_model_dirs[family])
    wanted = {f"{head._module_path(m)}.{n}" for m in (head.lm_head(), head.final_norm())
              for n, _ in m.named_parameters()}
    assert real_parameters(head) == wanted
    for module in (head.lm_head(), head.final_norm()):
        assert all(t.device.type == "cpu" for t in list(module.parameters()) + list(module.buffers()))
    layers = [p for layer in head.decoder_layers() for p in layer.parameters()]
    assert layers and all(p.is_meta for p in layers)
    assert head.model.get_input_embeddings().weight.is_meta


def test_word_grounder_reads_the_same_words(tiny_model_dirs, tiny_adapters):
    head, full = load_head(tiny_model_dirs["llava"]), tiny_adapters["llava"]
    U, base, strengths = random_concepts(full, k=8, seed=3)
    for layer in ("1", "norm"):
        ours = WordGrounder(head, layer=layer, min_ratio=None)(U, base=base, strengths=strengths)
        theirs = WordGrounder(full, layer=layer, min_ratio=None)(U, base=base, strengths=strengths)
        assert ours == theirs and any(ours)


def test_dtype(tiny_model_dirs, tiny_adapters):
    head = load_head(tiny_model_dirs["qwen2_vl"], dtype="bfloat16")
    assert head.lm_head().weight.dtype == head.final_norm().weight.dtype == torch.bfloat16
    assert torch.equal(head.lm_head().weight, tiny_adapters["qwen2_vl"].lm_head().weight.bfloat16())
    with pytest.raises(MMConceptsError, match="unknown dtype"):
        load_head(tiny_model_dirs["qwen2_vl"], dtype="int8")


# ---- key names -----------------------------------------------------------------------------------------------
def test_match_key():
    keys = {"language_model.model.norm.weight", "language_model.lm_head.weight", "vision.post_layernorm.weight",
            "a.block.norm.bias", "b.block.norm.bias", "lm_head.bias"}
    assert match_key("lm_head.bias", keys) == "lm_head.bias"  # exact first
    assert match_key("model.language_model.norm.weight", keys) == "language_model.model.norm.weight"
    assert match_key("lm_head.weight", keys) == "language_model.lm_head.weight"
    assert match_key("x.block.norm.bias", keys) is None  # "block.norm.bias": two keys -> ambiguous
    assert match_key("model.final_ln.weight", keys) is None
    assert match_key("weight", {"a.weight"}) is None  # a one-component suffix never matches


def test_legacy_llava_names(tiny_model_dirs):
    """transformers 5 writes llava-1.5's old names (language_model.model.*, language_model.lm_head.*)."""
    with safe_open(str(tiny_model_dirs["llava"] / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert {"language_model.model.norm.weight", "language_model.lm_head.weight"} <= keys
    assert not {"model.language_model.norm.weight", "lm_head.weight"} & keys


@pytest.mark.parametrize("family", FAMILIES)
def test_renamed_checkpoint_keys(family, tiny_model_dirs, tiny_adapters, tmp_path):
    folder = rewrite(tiny_model_dirs[family], tmp_path / family, rename=lambda k: "legacy." + k)
    assert_same_head(load_head(folder), tiny_adapters[family])


def test_new_style_llava_names(tiny_model_dirs, tiny_adapters, tmp_path):
    def rename(key):
        return key.replace("language_model.model.", "model.language_model.").replace("language_model.lm_head.",
                                                                                     "lm_head.")
    folder = rewrite(tiny_model_dirs["llava"], tmp_path / "llava", rename=rename)
    assert_same_head(load_head(folder), tiny_adapters["llava"])


# ---- sharded, tied ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharded_llava(tiny_model_dirs, tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    folder = copy_processor(tiny_model_dirs["llava"], tmp_path_factory.mktemp("sharded") / "llava")
    net = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["llava"])
    net.save_pretrained(folder, max_shard_size="50KB")
    assert not (folder / "model.safetensors").exists()
    return folder


def needed_shards(folder):
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {weight_map["language_model.lm_head.weight"], weight_map["language_model.model.norm.weight"]}
    return needed, set(weight_map.values())


def test_sharded_checkpoint_opens_only_needed_shards(sharded_llava, tiny_adapters, monkeypatch):
    opened = []

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return safe_open(path, *args, **kwargs)

    monkeypatch.setattr(head_module, "safe_open", spy)
    head = load_head(sharded_llava)
    assert_same_head(head, tiny_adapters["llava"])
    needed, shards = needed_shards(sharded_llava)
    assert len(shards) > len(needed) + 3
    assert {p.rsplit("/", 1)[-1] for p in opened} == needed and len(opened) == len(needed)


def test_hub_id_fetches_only_needed_shards(sharded_llava, tiny_adapters, tmp_path, monkeypatch):
    """A hub id resolved offline from a cache that holds only the index, the needed shards and the processor."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny--llava-sharded"
    snapshot = repo / "snapshots" / commit
    needed, _ = needed_shards(sharded_llava)
    snapshot.mkdir(parents=True)
    for path in sharded_llava.iterdir():
        if not path.name.startswith("model-") or path.name in needed:
            shutil.copy(path, snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / ".no_exist" / commit).mkdir(parents=True)
    (repo / ".no_exist" / commit / "model.safetensors").touch()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    head = load_head("tiny/llava-sharded")
    assert head.model_id == "tiny/llava-sharded" and head.commit == commit
    assert_same_head(head, tiny_adapters["llava"])


def test_tied_embeddings(tiny_model_dirs, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(tiny_model_dirs["llava"])
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    torch.manual_seed(1)
    folder = copy_processor(tiny_model_dirs["llava"], tmp_path / "tied")
    AutoModelForImageTextToText.from_config(config).save_pretrained(folder)
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        assert not any("lm_head" in k for k in handle.keys())  # only the input embeddings are stored
    head, full = load_head(folder), load_model(folder, device="cpu")
    assert_same_head(head, full)
    assert head.model.get_input_embeddings().weight is head.lm_head().weight
    assert all(p.is_meta for layer in head.decoder_layers() for p in layer.parameters())


# ---- fallback and errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["unmatched", "ambiguous", "no-safetensors", "tied-flag-off"])
def test_falls_back_to_the_full_model(case, tiny_model_dirs, tiny_adapters, tmp_path, monkeypatch):
    src, norm = tiny_model_dirs["llava"], "language_model.model.norm.weight"
    if case == "unmatched":
        folder = rewrite(src, tmp_path / case, rename=lambda k: k.replace(".norm.", ".final_ln."))
    elif case == "ambiguous":
        extra = torch.ones(tiny_adapters["llava"].hidden_size)
        folder = rewrite(src, tmp_path / case, rename=lambda k: "a." + k if k == norm else k,
                         add={"b.language_model.model.norm.weight": extra})
    elif case == "no-safetensors":
        folder = copy_processor(src, tmp_path / case)
        torch.save(load_file(str(src / "model.safetensors")), folder / "pytorch_model.bin")
    else:  # no lm_head in the checkpoint and the config does not tie it
        folder = rewrite(src, tmp_path / case, drop=("language_model.lm_head.weight",))
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return load_model(*args, **kwargs)

    monkeypatch.setattr(head_module, "load_model", spy)
    adapter = load_head(folder, dtype="float32")
    assert calls == [((folder,), {"device": "cpu", "dtype": "float32", "revision": None,
                                  "trust_remote_code": False})]
    assert adapter.head_only is False
    assert not any(p.is_meta for p in adapter.model.parameters())
    if case in ("ambiguous", "no-safetensors"):
        assert torch.equal(adapter.lm_head().weight, tiny_adapters["llava"].lm_head().weight)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="the shipped model is not built yet")
def test_default_model():
    head, full = load_head(), load_model(device="cpu")
    assert head.model_id == full.model_id == EMBEDDED_MODEL
    assert_same_head(head, full)


def test_errors_match_load_model(tmp_path, tiny_model_dirs):
    def message(fn, *args):
        with pytest.raises(MMConceptsError) as info:
            fn(*args)
        return str(info.value)

    copy_processor(tiny_model_dirs["llava"], tmp_path / "no-processor")
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (tmp_path / "no-processor" / name).unlink()
    for arg in ("nobody-here/no-such-model", str(tmp_path / "nope"), tmp_path / "no-processor"):
        assert message(load_head, arg) == message(load_model, arg)
