"""The reconstruction spliced into the model: does the model still do what it did with the dictionary's
reconstruction in place of the state?

Reconstruction error says how far ``h_hat = inverse_transform(transform(h))`` is from ``h``; it does not say
whether the difference matters to the model. Every sparse-autoencoder paper therefore also splices ``h_hat``
into the forward pass and reads what the model predicts. :class:`Splice` does it, through the one hook owner
(:class:`~mmconcepts.models.hooks.Hooks`): at the dictionary's layer, at chosen positions (:func:`at_positions`
for one forward pass, :func:`at_steps` during generation), the state is replaced by a function of it: the
reconstruction (:func:`reconstruction`, any dictionary with ``transform`` / ``inverse_transform``: Semi-NMF,
PCA, the SAEs, K-Means' nearest centroid), or a constant (:func:`constant`: zero, or the layer's mean state
over every position, for the ablations that set the scale).

Metrics (:func:`fidelity_evaluation`; :mod:`~mmconcepts.evaluation.fidelity.scores`)
-------------------------------------------------------------------------------------
Each test image is captioned greedily as the feature store's images were (its instruction and caption
lengths); the step at which the token of interest is predicted is found (:class:`~mmconcepts.extract.
token_match.WordMatcher`, as extraction does), and the state from which it is predicted, the state the
dictionary was learnt on, is the one replaced (positions ``"token"``). Images whose caption lacks the token
are left out (``n_skipped``). The mean state of mean ablation is the layer's over every real position (image,
prompt and whole teacher-forced caption) of those images (:func:`~mmconcepts.evaluation.fidelity.mean_state.
position_mean`: one recording pass, stopped after the layer). The image, the prompt and the caption up to that
step are then read once per variant (:func:`~mmconcepts.models.prompts.append_tokens`), clean, with the state
zeroed, with the mean state, with the mean *training feature* (:func:`~mmconcepts.extract.features.
mean_feature`; ``ce_token_mean``, ``kl_token_mean``: shown, not a zero point) and with each method's
reconstruction, and the next-token distribution at the position read:

``kl_divergence`` (``kl_zero``, ``kl_mean``)
    mean ``KL(p_clean || p_spliced)``;
``kl_recovered_zero``, ``kl_recovered_mean``
    ``1 - KL_spliced / KL_ablated`` of the means;
``ce_spliced`` (``ce_clean``, ``ce_zero``, ``ce_mean``)
    mean ``-log p(token)`` of the token the clean model said there;
``ce_recovered_zero``, ``ce_recovered_mean``
    ``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)`` of the means;
``captions_unchanged``
    each image captioned again, greedily, with the reconstruction spliced in at the token's step as the
    model generates (batched, from each image's prompt read once: :class:`~mmconcepts.models.prompt_cache.
    PromptCache`): the share of captions equal to the clean ones.

``explained_variance``, ``l0`` and ``dead_concepts`` are the dictionary's on the test store's states (every
test sample): ``1 - sum ||h - h_hat||^2 / sum ||h - mean h||^2``, the mean number of non-zero activations
per sample (a point dictionary's: its one nearest concept, the one its reconstruction is), and the share of
concepts active on no test sample.

What the numbers say (the demo: ``mmconcepts demo``, seed 0, token "circle", layer ``"norm"``, K=20, 110 test
images whose caption says "circle")
-------------------------------------------------------------------------------------------------------------
Clean, the model gives "circle" 0.41 on average there (CE 0.89: attribute words compete for that step);
zero-ablated the logits are 0 (CE = log 2048 = 7.62); mean-ablated (the final norm's mean over the 11,525
positions of the 110 sequences, image tokens most of them) CE 5.36, KL 2.45: a scale on the same side as zero.
The mean *training* state would not be one: every training state predicts "circle", so their mean is a pure
"circle" state (``ce_token_mean`` 0.18, below the clean loss). Semi-NMF: explained variance 0.944, L0 4.1, no
dead concept, KL 0.035 (``kl_recovered_mean`` 0.986), ``ce_recovered_mean`` 1.015, every caption unchanged;
PCA KL 0.007, JumpReLU SAE 0.043, K-Means 0.40, Simple 1.42 (``kl_recovered_mean`` 0.42). A reconstruction
pulled toward the training states (K-Means, Simple, the ReLU SAE: CE 0.58) predicts the token *better* than
the clean state, so ``ce_recovered_*`` exceeds 1 for them: the KL-based ``kl_recovered_*`` (never above 1) is
the one that ranks them. At ``"norm"`` the splice changes only the step it is made at (later steps never read
the final norm's earlier states), so captions change only where that step's greedy token does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from contextlib import nullcontext

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.hooks import LayerEdit
from mmconcepts.evaluation.fidelity.scores import (FidelityResult, FidelityRow, FitTally, cross_entropy, kl_divergence,
                                                   kl_recovered, recovered)
from mmconcepts.evaluation.fidelity.settings import FidelitySettings
from mmconcepts.evaluation.rows import mean

__all__ = ["Splice", "at_positions", "at_steps", "constant", "dictionary_fit", "fidelity_evaluation",
           "reconstruction"]

#: Activations (rows x concepts) of the test store's states encoded at once: a dictionary of many concepts
#: (an imported 100k-latent SAE) is never dense on all of them.
CHUNK = 1 << 24

#: ``where(hidden, call) -> (rows, positions)``: the states of a ``B x T x D`` forward call to replace, as two
#: index tensors, or ``None`` for none.
Where = Callable[["object", int], "tuple | None"]


def at_positions(positions, rows=None) -> Where:
    """The states of one forward pass (call 0): row ``rows[i]`` (default ``i``) at position ``positions[i]``.

    Examples
    --------
    >>> import torch
    >>> where = at_positions(torch.tensor([2, 0]))
    >>> [t.tolist() for t in where(torch.zeros(2, 3, 4), 0)], where(torch.zeros(2, 1, 4), 1)
    ([[0, 1], [2, 0]], None)
    """
    import torch

    positions = torch.as_tensor(positions).long()
    rows = torch.arange(len(positions)) if rows is None else torch.as_tensor(rows).long()

    def where(hidden, call: int):
        return (rows.to(hidden.device), positions.to(hidden.device)) if call == 0 else None

    return where


def at_steps(steps) -> Where:
    """During generation: row ``i``'s last position at forward call ``steps[i]`` (``None``: never), the state
    from which generated token ``steps[i]`` is predicted (call 0 is the prompt, call ``t`` step ``t``).

    Examples
    --------
    >>> import torch
    >>> where = at_steps([1, None, 1])
    >>> where(torch.zeros(3, 5, 4), 0) is None, [t.tolist() for t in where(torch.zeros(3, 1, 4), 1)]
    (True, [[0, 2], [0, 0]])
    """
    import torch

    steps = torch.tensor([-1 if s is None else int(s) for s in steps])

    def where(hidden, call: int):
        rows = (steps == call).nonzero(as_tuple=True)[0]
        if len(rows) == 0:
            return None
        return rows.to(hidden.device), torch.full_like(rows, hidden.shape[1] - 1).to(hidden.device)

    return where


def reconstruction(dictionary) -> Callable:
    """``h -> inverse_transform(transform(h))`` of a fitted dictionary (``N x D`` float32 states)."""
    return lambda states: dictionary.inverse_transform(dictionary.transform(states))


def constant(vector) -> Callable:
    """``h -> vector`` for every state (zero- and mean-ablation)."""
    return lambda states: vector.to(states.device, states.dtype).expand_as(states)


class Splice(LayerEdit):
    """A forward hook on one layer that replaces the states ``where`` picks by ``replace(states)``.

    Held by the adapter's hook owner (:meth:`~mmconcepts.models.base.ModelAdapter.hooks`, one
    :meth:`~mmconcepts.models.hooks.Hooks.intervene`): it exists only inside the ``with`` block, and the
    model is unchanged once the block exits.

    Parameters
    ----------
    adapter : ModelAdapter
    layer : str or int
        The layer whose output is edited (:meth:`~mmconcepts.models.base.ModelAdapter.resolve_layer`).
    replace : callable
        ``N x D`` float32 states -> their ``N x D`` replacement (:func:`reconstruction`, :func:`constant`).
    where : callable
        Which states of each forward call (:func:`at_positions`, :func:`at_steps`).

    Attributes
    ----------
    edited : int
        States replaced since the context was last entered.

    Examples
    --------
    The shipped captioner's final norm replaced by zero at the last position: the next token is uniform.

    >>> import random, torch
    >>> from mmconcepts.data.shapesworld import render, sample_scene
    >>> from mmconcepts.models import load_model
    >>> adapter = load_model()
    >>> inputs = adapter.encode([render(sample_scene(random.Random(0)))], [adapter.prompt()])
    >>> last = inputs["input_ids"].shape[1] - 1
    >>> zero = torch.zeros(adapter.hidden_size)
    >>> with Splice(adapter, "norm", constant(zero), at_positions([last])) as splice, torch.no_grad():
    ...     logits = adapter.model(**inputs).logits[0, -1]
    >>> splice.edited, bool((logits == 0).all())
    (1, True)
    """

    def __init__(self, adapter, layer, replace: Callable, where: Where):
        self.replace, self.where = replace, where
        super().__init__(adapter, layer)

    def _intervene(self, hidden, call: int):
        picked = self.where(hidden, call)
        if picked is None:
            return None
        rows, positions = picked
        new = self.replace(hidden[rows, positions].float())
        out = hidden.clone()
        out[rows, positions] = new.to(hidden.device, hidden.dtype)
        self.edited += len(rows)
        return out


# ---- the dictionary on the test store's states ---------------------------------------------------------------
def dictionary_fit(dictionary, Z) -> FidelityRow:
    """Explained variance, L0 and dead concepts of ``dictionary`` on states ``Z`` (``N x D``), encoded
    :data:`CHUNK` rows at a time (:func:`~mmconcepts.evaluation.fidelity.scores.explained_variance`,
    :func:`~mmconcepts.evaluation.fidelity.scores.active_counts`).

    Examples
    --------
    >>> import torch
    >>> from mmconcepts.decompose import PCA
    >>> Z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    >>> row = dictionary_fit(PCA(n_concepts=4).fit(Z), Z)
    >>> round(row["explained_variance"], 4), row["l0"], row["dead_concepts"]
    (1.0, 4.0, 0.0)
    """
    import torch

    Z = torch.as_tensor(Z).float()
    if Z.shape[0] == 0:
        raise MMConceptsError("no test state to measure the dictionary on; extract test features first")
    points = bool(getattr(dictionary, "concepts_are_points", False))
    tally = FitTally(Z.double().mean(0))
    rows = max(1, CHUNK // max(1, int(dictionary.components_.shape[0])))
    for start in range(0, Z.shape[0], rows):
        chunk = Z[start:start + rows]
        V = torch.as_tensor(dictionary.transform(chunk))
        # a point dictionary rebuilds each state from its nearest concept only: that one is active
        active = torch.zeros_like(V, dtype=torch.bool).scatter_(1, V.argmax(1, keepdim=True), True) if points \
            else V != 0
        tally.add(chunk, torch.as_tensor(dictionary.inverse_transform(V)), active)
    return tally.row()


# ---- the test images -----------------------------------------------------------------------------------------
class _Images:
    """The sampled test images, their clean captions and the step at which the token is predicted in each."""

    def __init__(self, adapter, test_meta, reading: dict, settings: FidelitySettings, batch_size: int):
        from mmconcepts.data.readers import load_image
        from mmconcepts.extract.token_match import WordMatcher
        from mmconcepts.models.generation import decode, generate_ids

        rows = list({m["image"]: m for m in reversed(list(test_meta))}.values())[::-1]  # one row per image
        if settings.n_images is not None and settings.n_images < len(rows):
            rows = [rows[i] for i in sorted(random.Random(settings.seed).sample(range(len(rows)), settings.n_images))]
        if not rows:
            raise MMConceptsError("no test image to splice the reconstruction into; extract test features first")
        self.adapter, self.batch_size = adapter, batch_size
        self.prompt = adapter.prompt(reading["instruction"])
        self.generation = dict(max_new_tokens=reading["max_new_tokens"], min_new_tokens=reading["min_new_tokens"],
                               batch_size=batch_size)
        pils = [load_image(m["image"]) for m in rows]
        ids = generate_ids(adapter, pils, self.prompt, **self.generation)
        matcher = WordMatcher(reading["token"], reading["also"])
        found = [matcher.first_piece(adapter.tokenizer, row) for row in ids]
        kept = [i for i, f in enumerate(found) if f is not None]
        self.n_skipped = len(rows) - len(kept)
        if not kept:
            raise MMConceptsError(f"the token {reading['token']!r} is in none of the {len(rows)} test images' "
                                  "captions; evaluate on test features of images whose captions say it")
        self.pils = [pils[i] for i in kept]
        self.ids = [ids[i] for i in kept]
        self.steps = [found[i][0] for i in kept]
        self.targets = [self.ids[j][s] for j, s in enumerate(self.steps)]
        self.captions = decode(adapter, self.ids)
        self.cache = self._prompt_cache()

    def _prompt_cache(self):
        """Each image read with the prompt once, when generating from there gives the clean captions back."""
        from mmconcepts.models.prompt_cache import PromptCache

        return PromptCache.checked(self.adapter, self.pils, self.prompt, self.ids, **self.generation)

    def batches(self):
        """``(slice, inputs, last)``: each batch's model inputs, the prompt and caption up to the token's step, and
        each row's last position (the one the token is predicted from)."""
        from mmconcepts.models.prompts import append_tokens, last_positions

        for start in range(0, len(self.pils), self.batch_size):
            rows = slice(start, min(start + self.batch_size, len(self.pils)))
            prefixes = [ids[:s] for ids, s in zip(self.ids[rows], self.steps[rows])]
            inputs = append_tokens(self.adapter, self.pils[rows], self.prompt, prefixes)
            yield rows, inputs, last_positions(inputs)

    def sequences(self):
        """Each batch's model inputs with the whole caption (up to its end of text), teacher-forced: the sequences
        the mean state is taken over."""
        from mmconcepts.models.prompts import append_tokens

        special = set(self.adapter.tokenizer.all_special_ids)
        for start in range(0, len(self.pils), self.batch_size):
            rows = slice(start, min(start + self.batch_size, len(self.pils)))
            captions = [ids[:next((i for i, t in enumerate(ids) if t in special), len(ids))] for ids in self.ids[rows]]
            yield append_tokens(self.adapter, self.pils[rows], self.prompt, captions)

    def captions_with(self, layer: str, replace: Callable) -> list[str]:
        """Every image captioned again with ``replace`` spliced in at its token's step."""
        from mmconcepts.models.generation import decode, generate_ids

        def context(rows: slice):
            return Splice(self.adapter, layer, replace, at_steps(self.steps[rows]))

        return decode(self.adapter, generate_ids(self.adapter, self.pils, self.prompt, **self.generation,
                                                 context=context, prompt_cache=self.cache))


def _log_probs(adapter, inputs: dict, last, splice: Splice | None):
    """The next-token log-probabilities at each row's ``last`` position (``B x V`` float32, on the CPU)."""
    import torch

    with torch.inference_mode(), splice if splice is not None else nullcontext():
        logits = adapter.model(**inputs).logits
    rows = torch.arange(logits.shape[0])
    return logits[rows, last.to(logits.device)].float().log_softmax(-1).cpu()


def fidelity_evaluation(folders: Mapping, test_meta, Z_test, model=None, settings: FidelitySettings | None = None,
                        **fields) -> FidelityResult:
    """Splice each method's reconstruction into the model (module docstring) and score it.

    Parameters
    ----------
    folders : ``{method: ConceptSet}``: concepts learnt at one layer, for one token, on one store (an
        evaluation's compared folders).
    test_meta : the test store's metadata rows (``image``), one or more per image.
    Z_test : the test store's states at the concepts' layer and token (``N x D``).
    model : a loaded adapter, options or an id (``None``: the one the store was read with).
    settings : :class:`~mmconcepts.evaluation.fidelity.settings.FidelitySettings`, or its fields as keywords.

    Returns
    -------
    FidelityResult
    """
    import torch

    from mmconcepts.concepts.concept_set import model_for
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.evaluation.fidelity.mean_state import position_mean
    from mmconcepts.extract.features import mean_feature
    from mmconcepts.params import settings_from

    settings = settings_from(FidelitySettings, settings, fields, "fidelity")
    if not folders:
        raise MMConceptsError("no concepts to splice in; pass at least one concepts folder")
    first = next(iter(folders.values()))
    adapter = model_for(first, model)
    from mmconcepts.models.vision_parts import check_decoder_layer

    layer = adapter.resolve_layer(first.summary["layer"])
    check_decoder_layer(layer, "the fidelity splice")
    for method, cs in folders.items():
        if adapter.resolve_layer(cs.summary["layer"]) != layer or cs.token != first.token:
            raise MMConceptsError(f"the {method} concepts are for layer {cs.summary['layer']}, token {cs.token!r}, "
                                  f"the others for layer {first.summary['layer']}, token {first.token!r}; "
                                  "splice concepts of one layer and token together")
        width = int(cs.dictionary.components_.shape[1])
        if width != adapter.hidden_size:
            raise MMConceptsError(f"the {method} concepts have dimension {width} but '{adapter.model_id}' has hidden "
                                  f"size {adapter.hidden_size}; use the model the features were extracted with")
    batch_size = settings.batch_size or first.manifest.get("batch_size") or 32
    images = _Images(adapter, test_meta, store_reading(first.manifest, first.token), settings, batch_size)
    mean_state, n_positions = position_mean(adapter, layer, images.sequences())
    ablations = {"zero": constant(torch.zeros(adapter.hidden_size)), "mean": constant(mean_state),
                 "token_mean": constant(mean_feature(first.features, first.summary["layer"], first.token))}
    replaces = {**{("ablation", a): f for a, f in ablations.items()},
                **{("method", m): reconstruction(cs.dictionary) for m, cs in folders.items()}}
    ce, kl = {"clean": []}, {}  # per image; positions "token": the state each image's token is predicted from
    for rows, inputs, last in images.batches():
        targets = torch.tensor(images.targets[rows])
        clean = _log_probs(adapter, inputs, last, None)
        ce["clean"] += cross_entropy(clean, targets).tolist()
        for key, replace in replaces.items():
            spliced = _log_probs(adapter, inputs, last, Splice(adapter, layer, replace, at_positions(last)))
            ce.setdefault(key, []).extend(cross_entropy(spliced, targets).tolist())
            kl.setdefault(key, []).extend(kl_divergence(clean, spliced).tolist())
    ce_clean, ce_zero, ce_mean = mean(ce["clean"]), mean(ce["ablation", "zero"]), mean(ce["ablation", "mean"])
    kl_zero, kl_mean = mean(kl["ablation", "zero"]), mean(kl["ablation", "mean"])
    by_method = {}
    for method, cs in folders.items():
        spliced = images.captions_with(layer, replaces["method", method])
        ce_method, kl_method = mean(ce["method", method]), mean(kl["method", method])
        by_method[method] = FidelityRow(
            **dictionary_fit(cs.dictionary, Z_test).to_json(), kl_divergence=kl_method,
            kl_recovered_zero=kl_recovered(kl_method, kl_zero), kl_recovered_mean=kl_recovered(kl_method, kl_mean),
            ce_spliced=ce_method, ce_recovered_zero=recovered(ce_clean, ce_method, ce_zero),
            ce_recovered_mean=recovered(ce_clean, ce_method, ce_mean),
            captions_unchanged=mean([float(a == b) for a, b in zip(spliced, images.captions)]))
    return FidelityResult(layer=layer, positions=settings.positions, n_images=len(images.pils),
                          n_skipped=images.n_skipped, n_samples=int(Z_test.shape[0]), n_positions=n_positions,
                          ce_clean=ce_clean, ce_zero=ce_zero, ce_mean=ce_mean, kl_zero=kl_zero, kl_mean=kl_mean,
                          ce_token_mean=mean(ce["ablation", "token_mean"]),
                          kl_token_mean=mean(kl["ablation", "token_mean"]), methods=by_method)
