import torch

from mmconcepts.grounding.text import concept_logits, ground_words
from mmconcepts.grounding.words import TokenWords, is_valid_word, random_words


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
    paper = ground_words(U, head, words, decode="paper")
    centered = ground_words(U, head, words, decode="centered")
    assert [c[0]["word"] for c in paper] == ["dog", "dog"]
    assert [c[0]["word"] for c in centered] == ["grass", "cat"]
    assert centered[0][0]["score"] == 0.5  # 1 - mean(1, 0)
    assert all(len(c) <= 10 for c in centered)
    logits = concept_logits(U, head, decode="paper")
    assert logits.shape == (2, len(tok)) and logits[0, tok.convert_tokens_to_ids("Ġdog")] == 5.0
