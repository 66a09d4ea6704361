"""The caption decoding of image-token concepts: what removing a concept from the image tokens takes out of its
images' captions, read in words; chosen by ``decode="auto"`` where the unembedding reads prompt words."""

from __future__ import annotations

import json

import pytest
import torch

from mmconcepts.errors import MMConceptsError

LAYER = "1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmconcepts.concepts import ground
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("caption-words")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=24, seed=0, split="train")
    extract(root / "train", "circle", out=root / "image-store", model=adapter,
            layers=[LAYER, "projector", "vision.-1", "vision.1"],
            positions="image", mode="teacher", batch_size=16, progress=False)
    extract(root / "train", "circle", out=root / "token-store", model=adapter, layers=[LAYER], mode="teacher",
            batch_size=16, progress=False)
    learn(root / "image-store", LAYER, n_concepts=4, out=root / "concepts", seed=0)
    ground(root / "concepts", model=adapter)
    return root, adapter


def _by_hand(adapter, concepts, k: int, image, caption: str, ablate: bool, layer: str = LAYER):
    """The probabilities summed over the caption's positions, the caption appended to the prompt and concept
    ``k`` subtracted where active at the image tokens by a hook written here (not PatchIntervention): at a
    decoder layer's output, at the vision encoder's last layer through the projector's input (transformers reads
    that layer's output before an output hook could change it), at an earlier vision layer's output (its
    patches: the class token in front left)."""
    from mmconcepts.data.readers import load_image
    from mmconcepts.models.patches import image_token_id, image_token_positions

    prompt = adapter.prompt(concepts.manifest["instruction"])
    tail = adapter.tokenizer(caption, add_special_tokens=False)["input_ids"]
    enc = adapter.encode([load_image(image)], [prompt])
    ids = torch.cat([enc["input_ids"], torch.tensor([tail])], 1)
    inputs = {**enc, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    where = image_token_positions(ids[0], image_token_id(adapter, ids))
    u = concepts.directions[k].float()

    def subtract(hidden, rows):
        states = hidden[0, rows].float()
        a = torch.as_tensor(concepts.encode(states))[:, k].float()
        hidden = hidden.clone()
        hidden[0, rows] = (states - a[:, None] * u).to(hidden.dtype)
        return hidden

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = subtract(hidden, where if layer == LAYER else slice(1, None))
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    tower = adapter.model.model.vision_tower.encoder.layers
    if not ablate:
        handle = None
    elif layer == "vision.3":
        handle = adapter.model.model.multi_modal_projector.register_forward_pre_hook(
            lambda module, args: (subtract(args[0], slice(None)), *args[1:]))
    elif layer == "vision.1":
        handle = tower[1].register_forward_hook(hook)
    else:
        handle = adapter.layer_module(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = adapter.model(**inputs).logits[0]
    finally:
        if handle is not None:
            handle.remove()
    n = len(tail)
    return logits[-1 - n:-1].float().softmax(-1).sum(0)


def test_auto_reads_image_token_concepts_of_a_decoder_layer_by_their_captions(run):
    from mmconcepts.concepts.concept_set import load_concepts

    root, _ = run
    grounding = json.loads((root / "concepts" / "grounding.json").read_text())
    assert grounding["settings"]["decode"] == "auto" and grounding["decode"] == "caption"
    cs = load_concepts(root / "concepts")
    assert any(cs.words(k) for k in range(cs.n_concepts))
    assert all(w not in {"circle", "circles"} for k in range(cs.n_concepts) for w in cs.words(k))


@pytest.mark.parametrize("layer", [LAYER, "vision.3", "vision.1"])
def test_the_scores_are_the_probability_the_concept_holds_up_along_the_caption(run, layer, tmp_path):
    from mmconcepts.concepts.caption_words import caption_scores
    from mmconcepts.concepts.concept_set import load_concepts, top_samples
    from mmconcepts.decompose import learn

    root, adapter = run
    if layer == LAYER:
        cs = load_concepts(root / "concepts")
    else:  # vision concepts, their own width, learnt without words
        learn(root / "image-store", layer, n_concepts=4, out=tmp_path / "vision", seed=0)
        cs = load_concepts(tmp_path / "vision")
    k = 0
    top = top_samples(cs.activations, cs.train_meta(), 2)[k]
    scores = caption_scores(cs, adapter, [top if j == k else [] for j in range(cs.n_concepts)])
    expected = sum(_by_hand(adapter, cs, k, im["image"], im["caption"], False, layer)
                   - _by_hand(adapter, cs, k, im["image"], im["caption"], True, layer) for im in top) / len(top)
    assert torch.allclose(scores[k], expected, atol=1e-5)
    assert float(scores[k].abs().sum()) > 0  # the concept is active on its top images: its removal shows
    assert torch.equal(scores[1:], torch.zeros_like(scores[1:]))  # no images: nothing scored


def test_a_concept_inactive_on_its_images_scores_nothing(run, monkeypatch):
    """Where the concept's code is 0 on every image token, the ablated pass is the clean one, bit for bit."""
    from mmconcepts.concepts.caption_words import caption_scores
    from mmconcepts.concepts.concept_set import load_concepts

    root, adapter = run
    cs = load_concepts(root / "concepts")
    encode = cs.encode

    def silent(Z):  # concept 0 never active
        A = torch.as_tensor(encode(Z)).clone()
        A[:, 0] = 0
        return A

    monkeypatch.setattr(cs, "encode", silent)
    # every concept with images, so the clean passes batch other images with concept 0's (other paddings)
    scores = caption_scores(cs, adapter, [cs.images(k)[:3] for k in range(cs.n_concepts)], batch_size=2)
    assert torch.equal(scores[0], torch.zeros_like(scores[0]))
    assert float(scores[1:].abs().sum()) > 0


def test_the_caption_decoding_refuses_what_it_cannot_read(run, tmp_path):
    from mmconcepts.concepts import ground
    from mmconcepts.decompose import learn

    root, adapter = run
    learn(root / "token-store", LAYER, n_concepts=3, out=tmp_path / "word", seed=0)
    with pytest.raises(MMConceptsError, match="reads concepts learnt on image tokens"):
        ground(tmp_path / "word", model=adapter, decode="caption")
    assert ground(tmp_path / "word", model=adapter)["decode"] == "effect"  # auto: the word's state, unembedded
    learn(root / "image-store", "projector", n_concepts=3, out=tmp_path / "projector", seed=0)
    assert ground(tmp_path / "projector", model=adapter)["decode"] == "caption"  # auto: every image-token layer


def test_the_command_line_grounds_image_token_concepts_by_their_captions(run, tmp_path, capsys):
    from mmconcepts.cli import main

    root, _ = run
    assert main(["learn", "--features", str(root / "image-store"), "--layer", LAYER, "-k", "3",
                 "--out", str(tmp_path / "c"), "--decode", "caption"]) == 0
    assert json.loads((tmp_path / "c" / "grounding.json").read_text())["decode"] == "caption"
    assert main(["learn", "--features", str(root / "token-store"), "--layer", LAYER, "-k", "3",
                 "--out", str(tmp_path / "w"), "--decode", "caption"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --decode caption reads concepts learnt on image tokens")
    assert not (tmp_path / "w").exists()


def test_an_edit_after_the_vision_layer_the_projector_reads_is_refused(run, monkeypatch):
    from mmconcepts.models.patch_edit import PatchIntervention

    _, adapter = run
    monkeypatch.setattr(adapter.model.config, "vision_feature_layer", -2)  # the projector reads vision.2
    with pytest.raises(MMConceptsError, match="reads vision.2, so an edit at vision.3 changes nothing"):
        PatchIntervention(adapter, "vision.3", [torch.arange(4)], [4], mode="add", direction=torch.zeros(1, 128),
                          strength=[1.0])
