"""Concept maps on the tiny LLaVA: attribution against a hand computation, occlusion against separate forward
passes, the local readout of the non-negative lasso, the cost in passes, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.concept_set import ConceptSet, load_concepts
from mmconcepts.attribution import MapSettings, concept_maps, local_readout

CAPTION = "a dog on the grass"


class Planted:
    """A one-concept linear dictionary: the activation is ``u . z`` (signed, unclamped)."""

    signed_activations = False

    def __init__(self, u):
        self.components_ = u[None, :]

    def _encode(self, Z):
        return Z @ self.components_.t().to(Z)

    def transform(self, Z):
        with torch.no_grad():
            return self._encode(Z)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 40 x 36 image with a bright square on the left (the tiny processor resizes and crops it)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, size=(36, 40, 3), dtype=np.uint8)
    pixels[10:22, 6:18] = (230, 200, 40)
    path = tmp_path_factory.mktemp("maps") / "image.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def planted(tiny_pipeline):
    cs = load_concepts(tiny_pipeline["concepts"])
    u = torch.randn(cs.dictionary.components_.shape[1], generator=torch.Generator().manual_seed(3))
    return ConceptSet(cs.path, Planted(u / u.norm()), cs.summary, cs.raw_activations[:, :1], cs.grounding), u / u.norm()


def _teacher_sequence(adapter, image):
    """The prompt and the caption up to (not including) "dog", encoded the way a user would by hand."""
    from mmconcepts.extract.extraction import store_reading

    prompt = adapter.prompt(store_reading({"tokens": {"dog": []}}, "dog")["instruction"])
    text = prompt + " " + CAPTION
    enc = adapter.encode([Image.open(image).convert("RGB")], [text])
    pieces = adapter.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = len(prompt) + 1 + CAPTION.index("dog")
    piece = next(i for i, (a, b) in enumerate(pieces["offset_mapping"]) if b > start)
    cut = enc["input_ids"].shape[1] - (len(pieces["input_ids"]) - piece)
    return {k: (v[:, :cut] if k in ("input_ids", "attention_mask") else v) for k, v in enc.items()}


def test_attribution_matches_a_hand_computation(tiny_pipeline, planted, image):
    """Gradient x input of u . z(norm) w.r.t. the embeddings, by autograd through inputs_embeds directly."""
    adapter = tiny_pipeline["adapter"]
    concepts, u = planted
    inputs = _teacher_sequence(adapter, image)
    with torch.no_grad():  # the embeddings the decoder reads (image features scattered in)
        E = adapter.model(**inputs, output_hidden_states=True).hidden_states[0]
    E = E.detach().requires_grad_(True)
    out = adapter.model(inputs_embeds=E, attention_mask=inputs["attention_mask"], output_hidden_states=True)
    a = out.hidden_states[-1][0, -1] @ u
    (grad,) = torch.autograd.grad(a, E)
    a = float(a.detach())
    positions = (inputs["input_ids"][0] == adapter.processor.image_token_id).nonzero().reshape(-1)
    expected = (grad * E).sum(-1)[0, positions].reshape(4, 4).detach().numpy()

    [[m]] = concept_maps(concepts, [image], [0], adapter, method="attribution", baseline="zero", steps=0,
                         mode="teacher", captions=[CAPTION])
    assert m.activation == pytest.approx(a, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(m.grid, expected, rtol=1e-3, atol=1e-6)
    assert m.box == pytest.approx((40 / 35, 0, 33 * 40 / 35, 36))  # 36 -> 32 px: 35 x 32, crop from x = 1
    assert np.abs(expected).max() > 0


def test_occlusion_is_the_drop_of_separate_passes(tiny_pipeline, planted, image):
    """Each cell's value equals a(image) - a(image with that cell's box painted its median colour), where both
    states come from the extraction's own teacher-mode reading."""
    from mmconcepts.data.readers import Sample
    from mmconcepts.extract.extraction import represent
    from mmconcepts.attribution.methods import _fill, _masked

    adapter = tiny_pipeline["adapter"]
    concepts, u = planted
    [[m]] = concept_maps(concepts, [image], [0], adapter, method="occlusion", mode="teacher", captions=[CAPTION])
    pil = Image.open(image).convert("RGB")
    boxes = __import__("mmconcepts.models.patches", fromlist=["x"]).patch_layout(adapter, pil.size).main.cell_boxes()
    cells = [0, 5, 15]
    copies = [pil] + [_masked(pil, boxes[c], _fill(pil)) for c in cells]
    samples = [Sample(id=str(i), image=str(image), captions=[CAPTION]) for i in range(len(copies))]
    features, _, _ = represent(adapter, samples, copies, token="dog", layers=["norm"], mode="teacher")
    a = features["norm"] @ u
    assert m.activation == pytest.approx(float(a[0]), rel=1e-4, abs=1e-5)
    for j, c in enumerate(cells):
        assert m.grid.reshape(-1)[c] == pytest.approx(float(a[0] - a[j + 1]), rel=1e-3, abs=1e-4)


def test_cost_in_passes(tiny_pipeline, planted, image):
    """Attribution, for the whole batch: the blank images' embeddings (a pass stopped at the decoder), one
    forward pass at the input (the explained state) and one forward and backward pass halfway; occlusion: one
    batched forward pass per image."""
    adapter = tiny_pipeline["adapter"]
    concepts, _ = planted
    calls = {"model": 0, "decoder": 0}
    handles = [adapter.model.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1)),
               adapter.decoder_layers()[-1].register_forward_pre_hook(
                   lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))]
    try:
        from mmconcepts.extract.extraction import store_reading
        from mmconcepts.attribution import maps_of_readings, read_images

        reading = store_reading(concepts.manifest, "dog")
        pil = Image.open(image).convert("RGB")
        readings = read_images(adapter, [pil, pil, pil], reading, mode="teacher", captions=[CAPTION] * 3)
        prompt = adapter.prompt(reading["instruction"])
        maps_of_readings(adapter, concepts, readings, [(0, 0), (1, 0), (2, 0)], MapSettings(), prompt)
        assert calls == {"model": 3, "decoder": 2}
        calls.update(model=0, decoder=0)
        maps_of_readings(adapter, concepts, readings, [(0, 0), (1, 0)], MapSettings("occlusion"), prompt)
        assert calls == {"model": 2, "decoder": 2}
    finally:
        for h in handles:
            h.remove()


def test_local_readout_of_the_lasso_by_hand():
    """U = [[1, 0], [0.6, 0.8]], z = (2, 1), l1 = 0: v = (1.25, 1.25) and w_0 = (U U^T)^-1 U row 0 = (1, -0.75);
    with l1 = 0.2 the bias is l1 (U U^T)^-1 1 = 0.2 / 1.6 = 0.125 for both concepts."""
    from mmconcepts.decompose import SemiNMF

    dictionary = SemiNMF(n_concepts=2, l1=0.0)
    dictionary.components_ = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    dictionary.n_features_in_ = 2
    concepts = ConceptSet(None, dictionary, {}, torch.zeros(1, 2), None)
    z = torch.tensor([[2.0, 1.0]])
    w, b = local_readout(concepts, z, [0])
    assert w[0].tolist() == pytest.approx([1.0, -0.75]) and float(b[0]) == pytest.approx(0.0)
    assert float(dictionary.transform(z)[0, 0]) == pytest.approx(1.25, abs=1e-4)
    dictionary.l1 = 0.2
    w, b = local_readout(concepts, z, [1])
    assert w[0].tolist() == pytest.approx([0.0, 1.25]) and float(b[0]) == pytest.approx(0.125)
    assert float(dictionary.transform(z)[0, 1]) == pytest.approx(1.25 - 0.125, abs=1e-4)


def test_semi_nmf_maps_run_and_agree_with_the_encoder(tiny_pipeline, image):
    """On the learnt Semi-NMF concepts, the readout's activation at the token equals the dictionary's."""
    adapter = tiny_pipeline["adapter"]
    cs = load_concepts(tiny_pipeline["concepts"])
    [[proj]] = concept_maps(cs, [image], [1], adapter, method="projection", mode="teacher", captions=[CAPTION])
    [[att]] = concept_maps(cs, [image], [1], adapter, method="attribution", steps=0, mode="teacher",
                           captions=[CAPTION])
    assert att.activation == pytest.approx(proj.activation, rel=1e-3, abs=1e-4)
    assert att.grid.shape == proj.grid.shape == (4, 4)
    assert set(att.to_json()) == {"method", "grid", "box"}


def test_token_not_read_gives_no_map(tiny_pipeline, image):
    cs = load_concepts(tiny_pipeline["concepts"])
    [[m]] = concept_maps(cs, [image], [0], tiny_pipeline["adapter"], mode="teacher", captions=["a cat on a mat"])
    assert m is None


def test_model_without_image_tokens_is_one_line(tiny_pipeline, image, monkeypatch):
    """A model that names no image token fails in one line; one whose image tokens cannot be placed is refused by
    the layout in one line, and its maps are made by occlusion over a grid of the image, with a warning."""
    from types import SimpleNamespace

    from mmconcepts.models.patches import image_token_id

    text_only = SimpleNamespace(processor=SimpleNamespace(), model=SimpleNamespace(config=SimpleNamespace()),
                                model_id="tiny-text-model")
    with pytest.raises(MMConceptsError, match="'tiny-text-model' names no image token") as info:
        image_token_id(text_only)
    assert "\n" not in str(info.value)
    adapter = tiny_pipeline["adapter"]
    cs = load_concepts(tiny_pipeline["concepts"])
    from mmconcepts.attribution.methods import OCCLUSION_CELLS, NoImageTokensWarning
    from mmconcepts.models.patches import patch_layout

    from PIL import Image

    size = Image.open(image).size
    monkeypatch.setattr(adapter.model.config, "model_type", "mllama")
    monkeypatch.setattr(adapter, "_layouts", {}, raising=False)  # layouts are kept per adapter and image size
    with pytest.raises(MMConceptsError, match="'mllama' image tokens cannot be placed") as info:
        patch_layout(adapter, size)
    assert "\n" not in str(info.value)
    with pytest.warns(NoImageTokensWarning, match="occlusion over a 8 x 8 grid"):
        [[m]] = concept_maps(cs, [image], [0], adapter, mode="teacher", captions=[CAPTION])
    assert m.method == "occlusion" and m.grid.shape == (OCCLUSION_CELLS, OCCLUSION_CELLS)
    assert tuple(m.box) == (0, 0, *size)


def test_image_that_fails_to_load_is_one_line(tiny_pipeline, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    cs = load_concepts(tiny_pipeline["concepts"])
    with pytest.raises(MMConceptsError, match="cannot read image") as info:
        concept_maps(cs, [bad], [0], tiny_pipeline["adapter"], mode="teacher", captions=[CAPTION])
    assert "\n" not in str(info.value)


def test_bad_settings_are_one_line():
    with pytest.raises(MMConceptsError, match="unknown heatmap method 'saliency'"):
        MapSettings("saliency")
    with pytest.raises(MMConceptsError, match="steps must be an integer >= 0"):
        MapSettings(steps=-1)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_every_family_maps_and_attribution_is_complete(tiny_pipeline, tiny_adapters, planted, image, family):
    """Each family's image tokens are found and placed; integrated gradients from the blank image add up to
    the change of the activation, so the hooked decoder input and the image positions are the right ones."""
    from mmconcepts.attribution.methods import _fill
    from mmconcepts.models.patches import patch_layout

    adapter = tiny_adapters[family]
    concepts, _ = planted
    pil = Image.open(image).convert("RGB")
    blank = Image.new("RGB", pil.size, _fill(pil))
    main = patch_layout(adapter, pil.size).main
    [[att]] = concept_maps(concepts, [image], [0], adapter, method="attribution", steps=8, mode="teacher",
                           captions=[CAPTION])
    [[proj], [proj_blank]] = concept_maps(concepts, [image, blank], [0, 0], adapter, method="projection",
                                          mode="teacher", captions=[CAPTION, CAPTION])
    [[occ]] = concept_maps(concepts, [image], [0], adapter, method="occlusion", mode="teacher", captions=[CAPTION])
    for m in (att, proj, occ):
        assert m.grid.shape == (main.rows, main.cols) and np.isfinite(m.grid).all()
        assert m.box == pytest.approx(main.box)
    change = proj.activation - proj_blank.activation
    assert abs(change) > 1e-3 and float(att.grid.sum()) == pytest.approx(change, rel=0.05)
    assert occ.activation == pytest.approx(proj.activation, rel=1e-4, abs=1e-5)
