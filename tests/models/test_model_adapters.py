"""Each family's tiny fixture, loaded through ``load_model``: prompt, batching, captions, layers, hooks."""

from __future__ import annotations

import pytest
import torch

from mmconcepts.models.streams import find_stream
from PIL import Image

from mmconcepts.errors import MMConceptsError
from mmconcepts.models import DEFAULT_INSTRUCTION, ModelAdapter, load_model
from mmconcepts.models.generic import GenericAdapter
from mmconcepts.models.idefics3 import Idefics3Adapter
from mmconcepts.models.llava import LlavaAdapter
from mmconcepts.models.qwen2_vl import Qwen2VLAdapter

#: fixture kind -> (adapter class, path of the language model); SmolVLM2 (``smolvlm``) uses the Idefics3 adapter.
KINDS = {"llava": (LlavaAdapter, "model.language_model"), "qwen2_vl": (Qwen2VLAdapter, "model.language_model"),
         "idefics3": (Idefics3Adapter, "model.text_model"), "smolvlm": (Idefics3Adapter, "model.text_model")}
FAMILIES = ["llava", "qwen2_vl", "idefics3"]


@pytest.fixture(scope="module")
def dirs(tiny_model_dirs, tiny_smolvlm_dir):
    return dict(tiny_model_dirs, smolvlm=tiny_smolvlm_dir)


@pytest.fixture(scope="module")
def adapters(dirs):
    return {kind: load_model(dirs[kind], device="cpu") for kind in KINDS}


@pytest.fixture(params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture
def adapter(kind, adapters) -> ModelAdapter:
    return adapters[kind]


def images():
    """Three images of different sizes and modes (one grayscale, converted to RGB by encode)."""
    return [Image.new("RGB", (40, 30), "red"), Image.new("L", (64, 64), 128), Image.new("RGB", (20, 50), "blue")]


def prompts(adapter):
    return [adapter.prompt(), adapter.prompt("a dog on the grass"), adapter.prompt("hotdog")]


def test_family_and_modules(adapter, kind):
    cls, path = KINDS[kind]
    assert type(adapter) is cls and adapter.family == cls.family and adapter.info()["model_type"] == kind
    text_model = adapter.model.get_submodule(path)
    assert adapter.decoder_layers() is text_model.layers
    assert adapter.final_norm() is text_model.norm
    assert adapter.lm_head() is adapter.model.lm_head
    assert (adapter.num_layers, adapter.hidden_size) == (3, 64)
    assert adapter.vocab_size == len(adapter.tokenizer)
    assert not adapter.model.training and adapter.dtype == torch.float32 and adapter.device.type == "cpu"


def test_prompt_uses_chat_template(adapter):
    prompt = adapter.prompt()
    assert DEFAULT_INSTRUCTION in prompt
    assert adapter.processor.image_token in prompt
    assert prompt.index(adapter.processor.image_token) < prompt.index(DEFAULT_INSTRUCTION)
    assert "say hi" in adapter.prompt("say hi")


def test_prompt_without_chat_template(adapter, monkeypatch):
    template = adapter.processor.chat_template
    expected = adapter.prompt("say hi")
    monkeypatch.setattr(adapter.processor, "chat_template", None)
    monkeypatch.setattr(adapter.tokenizer, "chat_template", template)
    assert adapter.prompt("say hi") == expected  # the processor lost it: the tokenizer's template serves
    monkeypatch.setattr(adapter.tokenizer, "chat_template", None)
    with pytest.raises(MMConceptsError, match="no chat template.*--prompt-template"):
        adapter.prompt()
    monkeypatch.setattr(adapter, "prompt_template", "Q: {image} {instruction} A:")
    assert adapter.prompt("say hi") == f"Q: {adapter.processor.image_token} say hi A:"


@pytest.mark.parametrize("template", ["{instruction} {question}", "{instruction} {", "{0}"])
def test_a_bad_prompt_template_is_one_line(template):
    from mmconcepts.models.options import ModelOptions

    with pytest.raises(MMConceptsError, match="--prompt-template"):
        ModelOptions(prompt_template=template)


def test_encode_left_pads_and_matches_unbatched(adapter):
    batch = adapter.encode(images(), prompts(adapter))
    mask = batch["attention_mask"]
    assert mask.shape[0] == 3 and bool(mask[:, -1].all())  # left padding: every row ends with a real token
    assert not bool(mask.all())  # the prompts have different lengths
    assert batch["pixel_values"].dtype == torch.float32
    with torch.no_grad():
        together = adapter.model(**batch).logits[:, -1]
        for i, (image, text) in enumerate(zip(images(), prompts(adapter))):
            alone = adapter.model(**adapter.encode([image], [text])).logits[0, -1]
            torch.testing.assert_close(together[i], alone, atol=1e-4, rtol=1e-4)


def test_encode_mismatched_lengths(adapter):
    with pytest.raises(MMConceptsError, match="one image per prompt"):
        adapter.encode(images()[:2], prompts(adapter))


def test_caption_batch_of_three(adapter):
    captions = adapter.caption(images(), max_new_tokens=5)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert adapter.caption(images(), max_new_tokens=5) == captions  # greedy: deterministic
    batch = adapter.encode(images(), [adapter.prompt()] * 3)
    out = adapter.model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 3 and out.shape[1] <= batch["input_ids"].shape[1] + 5


def test_hooks_equal_output_hidden_states(adapter):
    """Layer i < N-1 -> hidden_states[i + 1]; norm -> hidden_states[-1]; last layer is pre-norm."""
    batch = adapter.encode(images(), prompts(adapter))
    names = ["0", adapter.resolve_layer(-2), adapter.resolve_layer(-1), "norm"]
    seen, handles = {}, []
    for name in names:
        hook = (lambda n: lambda mod, args, out: seen.__setitem__(n, adapter.hidden_from_output(out)))(name)
        handles.append(adapter.layer_module(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = adapter.model(**batch, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    states = out.hidden_states
    assert len(states) == adapter.num_layers + 1
    expected = (3, batch["input_ids"].shape[1], adapter.hidden_size)
    assert all(tuple(seen[n].shape) == expected for n in names)
    torch.testing.assert_close(seen["0"], states[1])
    torch.testing.assert_close(seen["1"], states[2])
    torch.testing.assert_close(seen["norm"], states[-1])
    torch.testing.assert_close(adapter.final_norm()(seen["2"]), states[-1])
    torch.testing.assert_close(adapter.lm_head()(seen["norm"]), out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec, name", [("-1", "2"), (-3, "0"), ("0", "0"), (" 1 ", "1"), ("norm", "norm"),
                                        ("NORM", "norm"), (2, "2")])
def test_resolve_layer(adapter, spec, name):
    assert adapter.resolve_layer(spec) == name


@pytest.mark.parametrize("spec", ["3", -4, "foo", "", "1.5", True, "lm_head"])
def test_resolve_layer_errors(adapter, spec):
    with pytest.raises(MMConceptsError) as info:
        adapter.layer_module(spec)
    message = str(info.value)
    assert "0..2, -3..-1, norm" in message and "\n" not in message


def test_resolve_layers_and_layer_module(adapter):
    assert adapter.resolve_layers("0,-1, norm,2") == ["0", "2", "norm"]
    assert adapter.resolve_layers([1, "norm"]) == ["1", "norm"]
    assert adapter.layer_names() == ["0", "1", "2", "norm"]
    assert adapter.layer_module("-1") is adapter.decoder_layers()[2]
    assert adapter.layer_module("norm") is adapter.final_norm()
    with pytest.raises(MMConceptsError, match="no layer given"):
        adapter.resolve_layers(" , ")


def test_find_stream_in_every_container():
    t = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    assert find_stream(t)[0] is t
    assert find_stream((t, None))[0] is t and find_stream([None, t])[0] is t
    assert find_stream({"last_hidden_state": t})[0] is t
    stack = torch.stack([t, t + 100, t + 200])  # AltUp streams
    hidden, rebuild = find_stream(stack, active=1)
    assert hidden.equal(t + 100)
    rebuilt = rebuild(torch.zeros_like(t))
    assert rebuilt.shape == stack.shape and rebuilt[1].eq(0).all() and rebuilt[2].equal(t + 200)
    hidden, rebuild = find_stream((None, stack), active=0)
    out = rebuild(hidden * 0)
    assert isinstance(out, tuple) and out[0] is None and out[1][0].eq(0).all() and out[1][1].equal(t + 100)
    with pytest.raises(MMConceptsError, match="holds no batch x positions x width"):
        find_stream(torch.zeros(2, 3))


def test_info(adapter, kind):
    info = adapter.info()
    assert info["family"] == adapter.family and info["architecture"] == type(adapter.model).__name__
    assert (info["num_layers"], info["hidden_size"], info["vocab_size"]) == (3, 64, len(adapter.tokenizer))
    assert (info["first_layer"], info["last_layer"], info["norm_layer"]) == ("0", "2", "norm")
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["final_norm"] == f"{KINDS[kind][1]}.norm" and info["lm_head"] == "lm_head"


def test_generic_adapter_finds_same_modules(adapter):
    generic = GenericAdapter(adapter.model, adapter.processor, model_id="x")
    assert generic.decoder_layers() is adapter.decoder_layers()
    assert generic.final_norm() is adapter.final_norm()
    assert generic.lm_head() is adapter.lm_head()
    assert generic.resolve_layer(-1) == "2"


def test_generic_fallback_for_unregistered_type(tiny_llava_dir, monkeypatch):
    from mmconcepts.models import loading

    monkeypatch.delitem(loading.ADAPTERS, "llava")
    adapter = load_model(tiny_llava_dir, device="cpu")
    assert type(adapter) is GenericAdapter and adapter.family == "generic"
    assert adapter.info()["decoder_layers"] == "model.language_model.layers.0..2"
    assert len(adapter.caption(images()[:2], max_new_tokens=3)) == 2


def test_generic_adapter_says_when_it_cannot(adapters):
    class Bare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(4, 4)

        def get_input_embeddings(self):
            return self.embed

    with pytest.raises(MMConceptsError, match="cannot find the decoder layers"):
        GenericAdapter(Bare(), adapters["llava"].processor, model_id="bare")


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_casts_pixels(tiny_model_dirs, family):
    adapter = load_model(tiny_model_dirs[family], device="cpu", dtype="bfloat16")
    assert adapter.dtype == torch.bfloat16 and adapter.info()["dtype"] == "bfloat16"
    batch = adapter.encode(images()[:2], prompts(adapter)[:2])
    assert batch["pixel_values"].dtype == torch.bfloat16 and batch["input_ids"].dtype == torch.long
    with torch.no_grad():
        assert adapter.model(**batch).logits.shape[0] == 2
