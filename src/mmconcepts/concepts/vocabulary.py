"""Which decoded tokens count as real words, offline.

A grounded word is a word-initial token (subword continuations are dropped), longer than two characters,
that is either a number or an English word among ``wordfreq``'s 100,000 most frequent, and not a stopword.
Stopwords are scikit-learn's English list without its content words (it lists "top", "bottom", "fire",
"system", ... which are real concept words here).
"""

from __future__ import annotations

import random
from functools import lru_cache

#: Content words in scikit-learn's stopword list that a concept may legitimately be about.
_CONTENT_WORDS = {
    "amount", "back", "bill", "bottom", "call", "computer", "cry", "describe", "detail", "fill", "find", "fire",
    "found", "front", "interest", "mill", "move", "name", "part", "see", "show", "side", "sincere", "system",
    "thick", "thin", "top", "full", "empty", "couple", "hundred", "fifteen", "fifty", "forty", "sixty", "twelve",
    "twenty", "three", "five", "four", "six", "eight", "nine", "ten", "eleven", "two",
}
#: Word-start markers of byte-level BPE and SentencePiece vocabularies.
_WORD_START = ("Ġ", "▁")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS - _CONTENT_WORDS)


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    from wordfreq import top_n_list

    return frozenset(w for w in top_n_list("en", 100_000) if w.isalpha())


def is_valid_word(word: str) -> bool:
    """Whether ``word`` (already lower-cased and stripped) is a real, non-stopword word or a number."""
    if len(word) <= 2:
        return False
    if word.isdigit():
        return True
    return word.isalpha() and word in english_words() and word not in stopwords()


class TokenWords:
    """Maps token ids of a tokenizer to grounded words (or ``None`` for pieces that are not words).

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from mmconcepts.models import DEFAULT_MODEL_DIR
    >>> tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)      # the shipped captioner's
    >>> words = TokenWords(tokenizer)
    >>> [words(i) for i in tokenizer.convert_tokens_to_ids(["red", "the", ","])]
    ['red', None, None]
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.marked = any(t.startswith(_WORD_START) for t in vocab)
        self.special = set(tokenizer.all_special_ids)
        self._cache: dict[int, str | None] = {}

    def __call__(self, token_id: int) -> str | None:
        if token_id in self._cache:
            return self._cache[token_id]
        word = None
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if token_id not in self.special and isinstance(piece, str):
            word_start = piece.startswith(_WORD_START) if self.marked else not piece.startswith("##")
            text = self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False).strip().lower()
            if word_start and is_valid_word(text):
                word = text
        self._cache[token_id] = word
        return word

    def vocabulary(self) -> list[str]:
        """Every distinct valid word of the tokenizer, sorted (the pool of the Rnd-Words baseline)."""
        return sorted({w for i in range(len(self.tokenizer)) if (w := self(i))})


def random_words(pool: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` distinct words drawn from ``pool`` (fewer if the pool is smaller)."""
    return rng.sample(pool, min(n, len(pool)))
