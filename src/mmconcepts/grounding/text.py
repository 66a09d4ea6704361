"""Text grounding: read each concept as words, by decoding it through the model's unembedding.

``logits_k = W_U u_k`` (the paper's decoding, ``decode="paper"``), optionally after the final norm. Every
concept of a dictionary learnt at one token position shares a large common component (the position predicts
the token of interest itself), which dominates the raw decode: every concept then reads "dog, dog, ...".
``decode="centered"`` (the default) scores each token by how much more concept k predicts it than the
average concept, ``W_U u_k - mean_j W_U u_j``, which keeps what is *specific* to the concept.
Of the 50 best tokens, the first ``n_words`` real words are kept (see :mod:`mmconcepts.grounding.words`).
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
                 n_words: int = 10) -> list[list[dict]]:
    """The grounded words of every concept: ``[[{"word", "score"}, ...], ...]``, best first.

    Parameters
    ----------
    components : ``K x D`` concept directions.
    lm_head : the unembedding module (``adapter.lm_head()``).
    token_words : a :class:`~mmconcepts.grounding.words.TokenWords` for the model's tokenizer.
    norm : the final norm module, to apply before decoding (``None``: the paper's choice, no norm).
    """
    logits = concept_logits(components, lm_head, norm=norm, decode=decode)
    top_k = min(top_k, logits.shape[1])
    scores, ids = logits.topk(top_k, dim=1)
    result = []
    for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
        words, seen = [], set()
        for score, token_id in zip(row_scores, row_ids):
            word = token_words(token_id)
            if word and word not in seen:
                seen.add(word)
                words.append({"word": word, "score": round(score, 4)})
            if len(words) == n_words:
                break
        result.append(words)
    return result
