"""Find the token of interest as a whole *word* in token sequences, whatever the tokenizer.

Tokenizers split words into pieces (``"hot" "dog"``), mark word starts with a leading space (``"Ġdog"``,
``"▁dog"``) and keep case. Rather than compare token strings, we decode and match the word in text
(case-insensitive, on word boundaries), then map the match back to the first token whose decoded text
reaches into it: the first piece of the word.

Examples
--------
>>> matcher = WordMatcher("dog", also=["dogs"])
>>> matcher.find("A dog and a hotdog")
(2, 'dog')
>>> matcher.find("Two dogs") is not None
True
>>> matcher.find("hotdogs only") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class WordMatcher:
    """Matches the word ``token`` (and the variants in ``also``) in text and in token sequences."""

    def __init__(self, token: str, also: Sequence[str] = ()):
        words = [w.strip() for w in [token, *also] if w and w.strip()]
        if not words:
            raise ValueError("the token of interest is empty")
        self.token = words[0]
        self.words = words
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])", re.IGNORECASE)

    def find(self, text: str) -> tuple[int, str] | None:
        """``(start, surface form)`` of the first whole-word match in ``text``, or ``None``."""
        m = self._pattern.search(text)
        return (m.start(), m.group(0)) if m else None

    def in_any(self, texts: Sequence[str]) -> bool:
        """Whether any of the texts contains the word."""
        return any(self._pattern.search(t) for t in texts)

    def first_piece(self, tokenizer, ids: Sequence[int]) -> tuple[int, str, str] | None:
        """Index of the token that begins the first whole-word match in ``ids``.

        Returns ``(index, surface form, decoded text)`` or ``None`` when the word is not in the decoded text.
        Uses a binary search over decoded prefixes, so it costs O(log n) decodes.
        """
        ids = list(ids)
        text = _decode(tokenizer, ids)
        match = self.find(text)
        if match is None:
            return None
        start, surface = match
        lo, hi = 0, len(ids) - 1
        while lo < hi:  # smallest k whose prefix ids[:k+1] decodes past the match start
            mid = (lo + hi) // 2
            if len(_decode(tokenizer, ids[: mid + 1])) > start:
                hi = mid
            else:
                lo = mid + 1
        return lo, surface, text


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def pieces(tokenizer, text: str, start_char: int) -> tuple[list[int], int | None]:
    """The ids of ``tokenizer(text)`` (no special tokens) and the index of the one whose span holds
    ``start_char`` (the first piece of a word starting there); ``None`` past the text."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if a <= start_char < b or (a >= start_char and b > a):
            return list(enc["input_ids"]), i
    return list(enc["input_ids"]), None
