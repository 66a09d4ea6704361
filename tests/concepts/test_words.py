import torch

import pytest

from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.decoding import WordGrounder, concept_scores, ground_words, typical_strengths
from mmconcepts.concepts.vocabulary import TokenWords, is_valid_word, random_words


def test_valid_words():
    assert is_valid_word("dog") and is_valid_word("top") and is_valid_word("2024")
    assert not is_valid_word("the") and not is_valid_word("ab") and not is_valid_word("xqzvt")
    assert not is_valid_word("dog's") and not is_valid_word("with")


def test_token_words_keep_word_starts_only(tiny_adapters):
    tok = tiny_adapters["llava"].tokenizer
    words = TokenWords(tok)
    assert words(tok.convert_tokens_to_ids("Ġdog")) == "dog"
    assert words(tok.convert_tokens_to_ids("dog")) is None  # a continuation piece ("hot" + "dog")
    assert words(tok.eos_token_id) is None
    pool = words.vocabulary()
    assert "dog" in pool and all(is_valid_word(w) for w in pool)
    import random

    drawn = random_words(pool, 3, random.Random(0))
    assert len(set(drawn)) == 3 and set(drawn) <= set(pool)


def _head(tokenizer, rows: dict, dim=4):
    head = torch.nn.Linear(dim, len(tokenizer), bias=False)
    with torch.no_grad():
        head.weight.zero_()
        for piece, vector in rows.items():
            head.weight[tokenizer.convert_tokens_to_ids(piece)] = torch.tensor(vector, dtype=torch.float32)
    return head


def test_centered_decoding_removes_the_shared_component(tiny_adapters):
    tok = tiny_adapters["llava"].tokenizer
    head = _head(tok, {"Ġdog": [1, 0, 0, 0], "Ġgrass": [0, 1, 0, 0], "Ġcat": [0, 0, 1, 0]})
    # both concepts carry a large "dog" component (the token the position predicts) plus their own part
    U = torch.tensor([[5.0, 1.0, 0.0, 0.0], [5.0, 0.0, 1.0, 0.0]])
    words = TokenWords(tok)
    paper = ground_words(concept_scores(U, head, decode="paper"), words, min_ratio=None)
    centered = ground_words(concept_scores(U, head, decode="centered"), words)
    assert [c[0]["word"] for c in paper] == ["dog", "dog"]
    assert [c[0]["word"] for c in centered] == ["grass", "cat"]
    assert centered[0][0]["score"] == 0.5  # 1 - mean(1, 0)
    assert all(len(c) <= 10 for c in centered)
    logits = concept_scores(U, head, decode="paper")
    assert logits.shape == (2, len(tok)) and logits[0, tok.convert_tokens_to_ids("Ġdog")] == 5.0


def test_effect_decoding_reads_what_the_concept_makes_likely(tiny_adapters):
    tok = tiny_adapters["llava"].tokenizer
    ids = {w: tok.convert_tokens_to_ids("Ġ" + w) for w in ("dog", "grass", "cat")}
    head = _head(tok, {"Ġdog": [1, 0, 0, 0], "Ġgrass": [0, 1, 0, 0], "Ġcat": [0, 0, 1, 0]})
    base = torch.tensor([8.0, 0.0, -20.0, 0.0])  # the mean feature predicts "dog"
    # concept 0 raises "grass" by 3 and "cat" by 10, but "cat" stays hopeless (-20 -> -10)
    U = torch.tensor([[0.0, 1.5, 5.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    strengths = torch.tensor([2.0, 1.0])
    words = TokenWords(tok)
    centered = ground_words(concept_scores(U, head, decode="centered"), words)
    assert centered[0][0]["word"] == "cat"  # linear in the logits: the hopeless word wins
    scores = concept_scores(U, head, decode="effect", base=base, strengths=strengths)
    grounded = ground_words(scores, words)
    assert [w["word"] for w in grounded[0]] == ["grass"]
    # by hand: logits of the mean (8, 0, -20 on dog, grass, cat; 0 elsewhere) and of mean + 2 u_0
    n_zero = len(tok) - 3
    z_base = torch.tensor(8.0).exp() + 1 + torch.tensor(-20.0).exp() + n_zero
    z_k = torch.tensor(8.0).exp() + torch.tensor(3.0).exp() + torch.tensor(-10.0).exp() + n_zero
    expected = float(torch.tensor(3.0).exp() / z_k - 1 / z_base)
    assert grounded[0][0]["score"] == pytest.approx(expected, rel=1e-4)
    assert scores[1].abs().max() < 1e-6  # concept 1 moves no token's logit: no effect, no word
    assert grounded[1] == []
    # a point concept (a K-Means centroid) is read as it is
    points = concept_scores(base[None] + 2 * U[:1], head, decode="effect", base=base, points=True)
    assert torch.allclose(points[0], scores[0], atol=1e-7)
    assert scores[0, ids["dog"]] < 0  # the probability mass moved away from the predicted token


def test_effect_decoding_needs_the_mean_feature(tiny_adapters):
    head = _head(tiny_adapters["llava"].tokenizer, {})
    with pytest.raises(MMConceptsError, match="mean training feature"):
        concept_scores(torch.ones(2, 4), head, decode="effect")
    with pytest.raises(MMConceptsError, match="dimension"):
        concept_scores(torch.ones(2, 5), head, decode="paper")
    with pytest.raises(MMConceptsError, match="unknown decoding"):
        concept_scores(torch.ones(2, 4), head, decode="logit-lens")


def test_typical_strengths_average_the_positive_activations():
    A = torch.tensor([[0.0, 2.0, 0.0], [4.0, 0.0, -1.0], [2.0, -1.0, 0.0]])
    assert typical_strengths(A).tolist() == [3.0, 2.0, 0.0]


def test_relative_cut_and_excluded_words(tiny_adapters):
    tok = tiny_adapters["llava"].tokenizer
    words = TokenWords(tok)
    scores = torch.full((1, len(tok)), -1.0)
    for w, v in (("dog", 0.5), ("grass", 0.3), ("cat", 0.1), ("image", -0.2)):
        scores[0, tok.convert_tokens_to_ids("Ġ" + w)] = v
    pick = lambda **kw: [w["word"] for w in ground_words(scores, words, **kw)[0]]  # noqa: E731
    assert pick(exclude={"dog"}) == ["grass"]  # 0.1 < 0.5 x 0.3: the cut is relative to the first kept word
    assert pick(exclude={"dog"}, min_ratio=0.3) == ["grass", "cat"]
    assert pick() == ["dog", "grass"]
    assert pick(min_ratio=0.0) == ["dog", "grass", "cat"]  # every promoted word, none at score 0
    assert pick(n_words=1) == ["dog"]
    assert pick(min_ratio=None)[:4] == ["dog", "grass", "cat", "image"]  # no cut, whatever the score


def test_word_grounder_settings(tiny_adapters):
    adapter = tiny_adapters["llava"]
    assert WordGrounder(adapter, layer="norm").apply_norm is False  # the features are already normed
    assert WordGrounder(adapter, layer="1").apply_norm is True
    paper = WordGrounder(adapter, decode="paper", layer="1")
    assert paper.apply_norm is False and paper.min_ratio is None  # the paper: lm_head directly, no cut
    grounder = WordGrounder(adapter, layer="1", exclude=["Dog"])
    assert "dog" not in grounder.pool() and grounder.settings()["exclude"] == ["dog"]
    for bad in ({"decode": "logit-lens"}, {"min_ratio": 1.5}, {"min_ratio": "half"}):
        with pytest.raises(MMConceptsError):
            WordGrounder(adapter, **bad)
