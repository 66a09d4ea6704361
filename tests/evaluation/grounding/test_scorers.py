"""CLIPScore with a tiny random CLIP and BERTScore with the packaged MiniLM, both loaded offline from folders."""

from __future__ import annotations

import random

import pytest
import torch

from mmconcepts.data.shapesworld import render, sample_scene
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.grounding.model_scores import BERTScorer, CLIPScorer, bert_score, clip_score, words_prompt

TEXTS = ["a red circle", "blue square on the left", "star", "a green triangle at the top"]


@pytest.fixture(scope="module")
def images():
    return [render(sample_scene(random.Random(i))) for i in range(4)]


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return CLIPScorer(tiny_clip_dir, device="cpu", batch_size=3)


def test_words_prompt():
    assert words_prompt(["dog", "grass", "park"]) == "A photo is described by the words dog, grass, park"
    assert words_prompt("dog") == "A photo is described by the words dog"


# ---------------------------------------------------------------------------------------------- CLIPScore

def _pooled(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_clip_score_matches_hand_computation(clip, tiny_clip_dir, images):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    inputs = processor(text=TEXTS, images=images, padding=True, truncation=True, max_length=16,
                       return_tensors="pt")
    with torch.no_grad():
        img = _pooled(model.get_image_features(pixel_values=inputs["pixel_values"]))
        txt = _pooled(model.get_text_features(input_ids=inputs["input_ids"],
                                              attention_mask=inputs["attention_mask"]))
    cos = (img * txt).sum(-1) / (img.norm(dim=-1) * txt.norm(dim=-1))
    expected = 2.5 * cos.clamp(min=0)
    scores = clip.score(images, TEXTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    assert (scores > 0).any() and ((scores >= 0) & (scores <= 2.5)).all()
    assert clip_score(images, TEXTS, clip) == pytest.approx(float(expected.mean()), abs=1e-5)


def test_clip_score_batching_and_repeated_images(clip, images):
    reference = clip.score(images, TEXTS)
    clip.batch_size = 1
    try:
        torch.testing.assert_close(clip.score(images, TEXTS), reference, atol=1e-5, rtol=1e-4)
    finally:
        clip.batch_size = 3
    # the same image object several times is embedded once and scores like separate copies
    same = clip.score([images[0]] * 4, TEXTS)
    copies = clip.score([images[0].copy() for _ in range(4)], TEXTS)
    torch.testing.assert_close(same, copies, atol=1e-5, rtol=1e-4)
    assert same[0] == pytest.approx(float(reference[0]), abs=1e-5)


def test_clip_score_truncates_long_texts(clip, images):
    long = "red " * 40  # far beyond the tiny model's 16 positions
    scores = clip.score(images[:2], [long, long + "blue square"])
    assert clip.max_length == 16 and torch.isfinite(scores).all()
    assert scores[0] == pytest.approx(float(clip.score(images[:1], [long + "blue square"])[0]), abs=1e-5)


def test_clip_score_input_errors(clip, images):
    with pytest.raises(MMConceptsError, match="same length"):
        clip.score(images, TEXTS[:2])
    with pytest.raises(MMConceptsError, match="no pairs"):
        clip.score([], [])


def test_clip_scorer_load_errors(tmp_path, minilm_dir):
    with pytest.raises(MMConceptsError, match="cannot load CLIP model .*--clip-model"):
        CLIPScorer(tmp_path / "missing", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MMConceptsError, match="--clip-model"):
        CLIPScorer(tmp_path / "empty", device="cpu")
    with pytest.raises(MMConceptsError, match="not a CLIP model"):
        CLIPScorer(minilm_dir, device="cpu")


# ---------------------------------------------------------------------------------------------- BERTScore

@pytest.fixture(scope="module")
def bert(minilm_dir):
    return BERTScorer(minilm_dir, device="cpu", batch_size=4)


def test_bertscore_identical_related_unrelated(bert):
    cands = ["a small red circle on the left", "a dog runs on the grass", "a dog runs on the grass"]
    refs = ["a small red circle on the left", "a puppy plays in the park", "the stock market fell sharply"]
    f1 = bert.f1(cands, refs)
    assert bert.num_layers == 6  # a local folder defaults to its last layer
    assert f1.shape == (3,) and f1.dtype == torch.float32
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[1] > f1[2]
    assert bert_score(cands, refs, bert) == pytest.approx(float(f1.mean()), abs=1e-6)


def test_bertscore_multiple_references_and_empty_strings(bert):
    single = bert.f1(["red circle", "red circle"], ["a red circle", "a blue square"])
    multi = bert.f1(["red circle", ""], [["a blue square", "a red circle"], ["a red circle"]])
    assert multi[0] == pytest.approx(float(single.max()), abs=1e-5)
    assert multi[1] == 0.0  # an empty candidate scores 0 (plain bert-score crashes on it with transformers 5)
    assert bert.f1(["red circle"], [""]).tolist() == [0.0]
    assert bert.f1(["red circle"], [[]]).tolist() == [0.0]


def test_bertscore_input_errors(bert):
    with pytest.raises(MMConceptsError, match="same length"):
        bert.f1(["a", "b"], ["a"])
    with pytest.raises(MMConceptsError, match="no pairs"):
        bert.f1([], [])
    with pytest.raises(MMConceptsError, match="mix"):
        bert.f1(["a", "b"], ["a", ["b"]])


def test_bertscore_load_errors(tmp_path, minilm_dir):
    with pytest.raises(MMConceptsError, match="cannot load BERTScore model .*--bert-model"):
        BERTScorer(tmp_path / "missing", device="cpu")
    with pytest.raises(MMConceptsError, match="--bert-layers between 1 and 6"):
        BERTScorer(minilm_dir, num_layers=7, device="cpu")
    with pytest.raises(MMConceptsError, match="no BERTScore baseline"):
        BERTScorer(minilm_dir, device="cpu", rescale_with_baseline=True)


def test_bertscore_roberta_tokenizer_gets_prefix_space(tmp_path):
    """bert-score encodes RoBERTa text with a leading space; transformers 5 ignores its per-call flag."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a red circle on the left", "a dog on the grass", "a blue square"], vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(tmp_path))
    tok = RobertaTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))  # no model_max_length
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path / "roberta")
    tok.save_pretrained(tmp_path / "roberta")
    scorer = BERTScorer(tmp_path / "roberta", device="cpu")
    inner = scorer.scorer._tokenizer
    assert inner.encode("red", add_special_tokens=False) == tok.encode(" red", add_special_tokens=False)
    assert inner.model_max_length == 38  # position limit minus RoBERTa's padding offset
    f1 = scorer.f1(["a red circle", "red " * 60], ["a red circle", "a dog"])  # the long text is truncated
    assert f1[0] == pytest.approx(1.0, abs=1e-4) and torch.isfinite(f1).all()
