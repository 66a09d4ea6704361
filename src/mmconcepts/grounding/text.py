"""Text grounding: read each concept as words, by decoding it through the model's unembedding.

``logits_k = W_U u_k`` (the paper's decoding, ``decode="paper"``), optionally after the final norm. Every
concept of a dictionary learnt at one token position shares a large common component (the position predicts
the token of interest itself), which dominates the raw decode: every concept then reads "dog, dog, ...".
``decode="centered"`` (the default) scores each token by how much more concept k predicts it than the
average concept, ``W_U u_k - mean_j W_U u_j``, which keeps what is *specific* to the concept.
Of the 50 best tokens, the first ``n_words`` real words are kept (see :mod:`mmconcepts.grounding.words`);
in centered decoding only words the concept promotes (score > 0).

``vocabulary="captions"`` (the default of :func:`~mmconcepts.grounding.ground`) keeps only words the model
used in the captions of the feature store: the words it describes these images with. Without it, words the
model never emits at that position (the instruction's "provide", "caption", chat roles) drift together in
the logits and fill the centered decode of concepts that promote little else.
"""

from __future__ import annotations

DECODINGS = ("centered", "paper")


def concept_logits(components, lm_head, norm=None, decode: str = "centered"):
    """``K x V`` token scores of the concepts (rows of ``components``)."""
    import torch

    from mmconcepts.errors import MMConceptsError

    if decode not in DECODINGS:
        raise MMConceptsError(f"unknown decoding {decode!r}: choose {' or '.join(DECODINGS)}")
    weight = lm_head.weight
    U = components.to(device=weight.device, dtype=weight.dtype)
    if U.shape[1] != weight.shape[1]:
        raise MMConceptsError(f"concepts have dimension {U.shape[1]} but the model's unembedding expects "
                              f"{weight.shape[1]}; use the model the features were extracted with")
    with torch.no_grad():
        if norm is not None:
            U = norm(U[:, None, :])[:, 0, :]
        logits = lm_head(U).float()
    if decode == "centered":
        logits = logits - logits.mean(dim=0, keepdim=True)
    return logits.cpu()


def ground_words(components, lm_head, token_words, norm=None, decode: str = "centered", top_k: int = 50,
                 n_words: int = 10, allowed: set[str] | None = None) -> list[list[dict]]:
    """The grounded words of every concept: ``[[{"word", "score"}, ...], ...]``, best first.

    Parameters
    ----------
    components : ``K x D`` concept directions.
    lm_head : the unembedding module (``adapter.lm_head()``).
    token_words : a :class:`~mmconcepts.grounding.words.TokenWords` for the model's tokenizer.
    norm : the final norm module, to apply before decoding (``None``: the paper's choice, no norm).
    allowed : if given, only these words can be grounded words.
    """
    logits = concept_logits(components, lm_head, norm=norm, decode=decode)
    top_k = min(top_k, logits.shape[1])
    scores, ids = logits.topk(top_k, dim=1)
    result = []
    for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
        words, seen = [], set()
        for score, token_id in zip(row_scores, row_ids):
            if decode == "centered" and score <= 0:
                break  # the concept promotes this token no more than the average concept does
            word = token_words(token_id)
            if word and word not in seen and (allowed is None or word in allowed):
                seen.add(word)
                words.append({"word": word, "score": round(score, 4)})
            if len(words) == n_words:
                break
        result.append(words)
    return result


def caption_vocabulary(captions) -> set[str]:
    """The lower-cased words of ``captions`` (what the model said about the images)."""
    import re

    return {w.lower() for c in captions for w in re.findall(r"[A-Za-z0-9]+", c)}


class WordGrounder:
    """Grounds concept directions in words with one model and one set of choices, for every method.

    Parameters
    ----------
    adapter : a loaded :class:`~mmconcepts.models.ModelAdapter`.
    decode : ``"centered"`` or ``"paper"``.
    apply_norm : decode ``norm(u_k)`` instead of ``u_k``.
    allowed : restrict the words to this set (e.g. :func:`caption_vocabulary` of the training captions).
    """

    def __init__(self, adapter, decode: str = "centered", apply_norm: bool = False, n_words: int = 10,
                 top_k: int = 50, allowed: set[str] | None = None):
        from mmconcepts.grounding.words import TokenWords

        self.adapter = adapter
        self.decode, self.apply_norm, self.n_words, self.top_k = decode, apply_norm, n_words, top_k
        self.allowed = allowed
        self.token_words = TokenWords(adapter.tokenizer)

    def __call__(self, components) -> list[list[dict]]:
        """``[[{"word", "score"}, ...], ...]`` for the rows of ``components``."""
        return ground_words(components, self.adapter.lm_head(), self.token_words,
                            norm=self.adapter.final_norm() if self.apply_norm else None, decode=self.decode,
                            top_k=self.top_k, n_words=self.n_words, allowed=self.allowed)

    def words(self, components) -> list[list[str]]:
        return [[w["word"] for w in ws] for ws in self(components)]

    def pool(self) -> list[str]:
        """Every word this grounder could return (the pool of the Rnd-Words baseline)."""
        words = self.token_words.vocabulary()
        return [w for w in words if self.allowed is None or w in self.allowed]

    def settings(self) -> dict:
        return {"decode": self.decode, "apply_norm": self.apply_norm, "n_words": self.n_words,
                "top_k": self.top_k, "vocabulary": "captions" if self.allowed is not None else "all"}
