"""Text grounding: read each concept as words, through the model's unembedding.

Three decodings of concept ``k`` (direction or point ``u_k`` in the feature space):

``decode="paper"``
    CoX-LMM's: the logits ``W_U u_k``. Every concept learnt at one token position shares a large common
    component (the position predicts the token of interest), which dominates the raw decode: every
    concept of "dog" reads "dog, dog, ...".
``decode="centered"``
    ``W_U u_k - mean_j W_U u_j``: how much more concept k predicts each token than the average concept.
    Linear in the logits, so it also "promotes" tokens whose probability stays nil (the chat roles and
    the instruction's words drift together in the logits).
``decode="effect"`` (the default)
    What the concept makes the model *say*: put the concept at its typical strength on top of the mean
    training feature, ``h_k = mean(Z) + s_k u_k`` (a point concept, a K-Means centroid, is its own
    ``h_k``), read it through the final norm (unless the features come after it) and the unembedding, and
    score every token by how much its next-token probability rises: ``softmax(W_U h_k) -
    softmax(W_U mean(Z))``. ``s_k`` is the mean of the concept's positive training activations. Only tokens
    that become likelier count, so words the model never says at that position cannot be read in.

Of the 50 best tokens the first ``n_words`` real words are kept (see :mod:`mmconcepts.concepts.vocabulary`),
only tokens the concept promotes (score > 0) and, except for ``"paper"``, only those scoring at least
``min_ratio`` times the concept's first grounded word: a concept that raises two words gets two words rather than
the two and eight it barely moves. Words in ``exclude`` (the token of interest itself, by default) are
skipped: every concept of "circle" predicts "circle", which says nothing about the concept.

The measurements behind the defaults are in the README (ShapesWorld findings).
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.settings import DECODINGS, MIN_RATIO, GroundingSettings

#: The most concept-by-token scores a :class:`WordGrounder` holds at once (a 100k-concept dictionary is read
#: in chunks of this many entries).
SCORE_ENTRIES = 1 << 24


def _check(components, weight):
    if components.ndim != 2 or components.shape[1] != weight.shape[1]:
        raise MMConceptsError(f"concepts have dimension {tuple(components.shape)[1:]} but the model's unembedding "
                              f"expects {weight.shape[1]}; use the model the features were extracted with")


def concept_scores(components, lm_head, norm=None, decode: str = "effect", base=None, strengths=None,
                   points: bool = False, center=None):
    """``K x V`` token scores of the concepts (rows of ``components``).

    Parameters
    ----------
    components : ``K x D`` concept directions (or points, see ``points``).
    lm_head : the unembedding module.
    norm : the final norm, applied before the unembedding (``None``: not applied).
    decode : ``"effect"``, ``"centered"`` or ``"paper"`` (see the module docstring).
    base : ``D`` mean training feature (``"effect"`` only).
    strengths : ``K`` typical activation of each concept (``"effect"`` with direction concepts).
    points : the concepts are points of the feature space (K-Means, Simple), decoded as they are.
    center : ``V`` logits subtracted by ``"centered"`` (``None``: the mean over ``components``; a dictionary
        scored in chunks passes the mean over all its concepts, :func:`mean_logits`).
    """
    import torch

    if decode == "caption":
        raise MMConceptsError("the caption decoding reads the whole model over the concepts' images, not the "
                              "unembedding alone: ground the folder (mmconcepts.concepts.ground)")
    if decode not in DECODINGS:
        raise MMConceptsError(f"unknown decoding {decode!r}: choose {', '.join(DECODINGS)}")
    weight = lm_head.weight
    _check(components, weight)
    U = components.to(device=weight.device, dtype=weight.dtype)

    def read(H):
        if norm is not None:
            H = norm(H[:, None, :])[:, 0, :]
        return lm_head(H).float()

    with torch.no_grad():
        if decode != "effect":
            logits = read(U)
            if decode == "paper":
                return logits.cpu()
            mean = logits.mean(dim=0, keepdim=True) if center is None else \
                torch.as_tensor(center).to(logits.device, logits.dtype).reshape(1, -1)
            return (logits - mean).cpu()
        if base is None or (strengths is None and not points):
            raise MMConceptsError("the effect decoding needs the mean training feature and the concepts' "
                                  "typical activations; use WordGrounder.ground_dictionary")
        b = torch.as_tensor(base).to(device=weight.device, dtype=weight.dtype).reshape(1, -1)
        if points:
            H = U
        else:
            s = torch.as_tensor(strengths).to(device=weight.device, dtype=weight.dtype).reshape(-1, 1)
            H = b + s * U
        return (read(H).softmax(dim=-1) - read(b).softmax(dim=-1)).cpu()


def typical_strengths(activations):
    """``s_k``: the mean of each concept's positive activations (0 for a concept never active); dense or
    sparse activations (:func:`~mmconcepts.concepts.activations.positive_means`)."""
    from mmconcepts.concepts.activations import positive_means

    return positive_means(activations)


def mean_logits(components, lm_head, norm=None, rows: int = 4096):
    """``V``: the mean over the concepts (rows of ``components``) of their logits, read ``rows`` at a time
    (what ``"centered"`` subtracts)."""
    import torch

    total = None
    for start in range(0, components.shape[0], rows):
        logits = concept_scores(components[start:start + rows], lm_head, norm, decode="paper")
        total = logits.double().sum(dim=0) if total is None else total + logits.double().sum(dim=0)
    return (total / max(components.shape[0], 1)).float() if total is not None else torch.zeros(0)


def ground_words(scores, token_words, top_k: int = 50, n_words: int = 10, allowed: set[str] | None = None,
                 min_ratio: float | None = MIN_RATIO, exclude: set[str] = frozenset()) -> list[list[dict]]:
    """The grounded words of every concept from its token scores: ``[[{"word", "score"}, ...], ...]``.

    Parameters
    ----------
    scores : ``K x V`` token scores (:func:`concept_scores`).
    token_words : a :class:`~mmconcepts.concepts.vocabulary.TokenWords` for the model's tokenizer.
    top_k : how many of the best tokens are read.
    n_words : the most words kept per concept.
    allowed : if given, only these words can be grounded words.
    min_ratio : keep only words scoring at least this share of the concept's first (best) grounded word
        (``None``: no cut). Tokens scoring <= 0 are kept only if ``min_ratio`` is ``None``.
    exclude : words never returned (lower-case).
    """
    top_k = min(top_k, scores.shape[1])
    values, ids = scores.topk(top_k, dim=1)
    result = []
    for row_scores, row_ids in zip(values.tolist(), ids.tolist()):
        words, seen, best = [], set(), None
        for score, token_id in zip(row_scores, row_ids):
            if min_ratio is not None and (score <= 0 or (best is not None and score < min_ratio * best)):
                break  # the concept does not raise this token (enough)
            word = token_words(token_id)
            if word and word not in seen and word not in exclude and (allowed is None or word in allowed):
                seen.add(word)
                best = score if best is None else best
                words.append({"word": word, "score": round(score, 6)})
            if len(words) == n_words:
                break
        result.append(words)
    return result


def caption_vocabulary(captions) -> set[str]:
    """The lower-cased words of ``captions`` (what the model said about the images)."""
    import re

    return {w.lower() for c in captions for w in re.findall(r"[A-Za-z0-9]+", c)}


class WordGrounder:
    """Grounds concepts in words with one model and one set of choices, for every method.

    Parameters
    ----------
    adapter : a loaded :class:`~mmconcepts.models.ModelAdapter` (the head alone is enough,
        :func:`~mmconcepts.models.head.load_head`).
    settings : :class:`~mmconcepts.concepts.settings.GroundingSettings`; or give its fields as keywords
        (``decode``, ``apply_norm``, ``n_words``, ``top_k``, ``min_ratio``).
    layer : the layer the concepts were learnt at (the final norm is not applied twice to ``"norm"``).
    allowed : restrict the words to this set (e.g. :func:`caption_vocabulary` of the training captions).
    exclude : words never returned (e.g. the token of interest).

    Examples
    --------
    Three directions that are the unembedding rows of "red", "circle" and "left" of the shipped captioner,
    read with the paper's decoding (the logits), "circle" excluded as the token of interest would be:

    >>> from mmconcepts.models import load_model
    >>> adapter = load_model()
    >>> U = adapter.lm_head().weight[adapter.tokenizer.convert_tokens_to_ids(["red", "circle", "left"])]
    >>> grounder = WordGrounder(adapter, layer="norm", decode="paper", n_words=2, exclude={"circle"})
    >>> [[w["word"] for w in words] for words in grounder(U)]
    [['red', 'assistant'], ['square', 'size'], ['left', 'caption']]

    A learnt dictionary is read with the default ``decode="effect"``, which needs the mean training feature
    and the concepts' typical strengths: ``grounder(U, base=Z.mean(0), strengths=typical_strengths(V))``
    (:func:`~mmconcepts.concepts.ground.ground` does this for a concepts folder).
    """

    def __init__(self, adapter, settings: GroundingSettings | None = None, *, layer: str | None = None,
                 allowed: set[str] | None = None, exclude=(), **fields):
        from mmconcepts.concepts.vocabulary import TokenWords

        if settings is None:
            settings = GroundingSettings(**fields)
        elif fields:
            raise MMConceptsError("give the grounding settings either as settings= or as keywords, not both")
        settings = settings.applied("token")  # "auto" reads directions through the unembedding
        self.adapter, self.layer, self.settings_ = adapter, layer, settings
        self.decode, self.apply_norm = settings.decode, settings.norm_for(layer)
        self.n_words, self.top_k, self.allowed = settings.n_words, settings.top_k, allowed
        self.min_ratio = settings.min_ratio_applied
        self.exclude = {str(w).strip().lower() for w in exclude}
        self.token_words = TokenWords(adapter.tokenizer)

    def scores(self, components, base=None, strengths=None, points: bool = False):
        """``K x V`` token scores (:func:`concept_scores` with this grounder's model and choices)."""
        return concept_scores(components, self.adapter.lm_head(),
                              norm=self.adapter.final_norm() if self.apply_norm else None, decode=self.decode,
                              base=base, strengths=strengths, points=points)

    def __call__(self, components, base=None, strengths=None, points: bool = False) -> list[list[dict]]:
        """``[[{"word", "score"}, ...], ...]`` for the rows of ``components``; ``strengths``: the typical
        activation of each (:func:`typical_strengths`), ``base``: the mean training feature.

        A large dictionary is scored :data:`SCORE_ENTRIES` (concepts x vocabulary) at a time, never all at
        once; there, under ``"effect"``, a concept never active (strength 0) is not scored: it raises no
        token, so it has no words either way."""
        K, V = int(components.shape[0]), int(self.adapter.lm_head().weight.shape[0])
        rows = max(1, SCORE_ENTRIES // max(V, 1))
        if K <= rows:
            return self._words(self.scores(components, base, strengths, points))
        import torch

        center = None
        if self.decode == "centered":
            center = mean_logits(components, self.adapter.lm_head(),
                                 self.adapter.final_norm() if self.apply_norm else None, rows)
        todo = torch.arange(K)
        if self.decode == "effect" and not points and strengths is not None and self.min_ratio is not None:
            todo = torch.nonzero(torch.as_tensor(strengths).reshape(-1) != 0).reshape(-1)
        words: list[list[dict]] = [[] for _ in range(K)]
        for start in range(0, todo.numel(), rows):
            idx = todo[start:start + rows]
            s = None if strengths is None else torch.as_tensor(strengths).reshape(-1)[idx]
            scores = concept_scores(components[idx], self.adapter.lm_head(),
                                    norm=self.adapter.final_norm() if self.apply_norm else None,
                                    decode=self.decode, base=base, strengths=s, points=points, center=center)
            for k, w in zip(idx.tolist(), self._words(scores)):
                words[k] = w
        return words

    def words_of(self, scores) -> list[list[dict]]:
        """The words of ``K x V`` token scores computed elsewhere (the caption decoding), with this grounder's
        vocabulary, exclusions and cut."""
        return self._words(scores)

    def _words(self, scores) -> list[list[dict]]:
        return ground_words(scores, self.token_words, top_k=self.top_k, n_words=self.n_words,
                            allowed=self.allowed, min_ratio=self.min_ratio, exclude=self.exclude)

    def pool(self) -> list[str]:
        """Every word this grounder could return (the pool of the Rnd-Words baseline)."""
        words = self.token_words.vocabulary()
        return [w for w in words if (self.allowed is None or w in self.allowed) and w not in self.exclude]

    def settings(self) -> dict:
        """What ``grounding.json`` records: the settings, the norm and cut in force, the excluded words."""
        return {**self.settings_.to_json(), "apply_norm": self.apply_norm, "min_ratio": self.min_ratio,
                "exclude": sorted(self.exclude)}
