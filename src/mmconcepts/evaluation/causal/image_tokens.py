"""The causal evaluation of image-token concepts: ablate and steer a concept where it lives, in the image tokens.

A concepts folder learnt on an image-token store (``extract --positions image``: one row per image token;
``concepts.positions == "image"``) describes the states of the prompt's image tokens at its layer,
not the state from which a word is predicted. :func:`~mmconcepts.evaluation.causal.interventions.causal_evaluation`
then intervenes there, through :class:`ImageRunner`, and scores the captions exactly as for word-position concepts
(:func:`~mmconcepts.evaluation.causal.scores.concept_scores`: success, specificity, fluency; the concepts
evaluated, their targets and the images of each kind as in :mod:`~mmconcepts.evaluation.causal.interventions`):

- the test rows are image-token rows; grouped by image (``index``) they give the test images, each once, with
  each image token's prompt ``position`` and, on ShapesWorld, the ``object`` under its patch;
- **ablation** (``ablate_where="active"``): at the dictionary's layer, at every image token ``p`` of the prompt
  where the concept is active (``a_pk = encode(h_p)[k] != 0``), ``h_p <- h_p - a_pk u_k``: the concept's term of
  the dictionary's reconstruction is removed wherever it is, and nothing else changes (an image on which the
  concept is inactive is captioned as before, bit for bit). ``ablate_where="object"``: the same over the token
  object's patches only (the patches whose ``object`` is the token object), whatever the concept's activation
  elsewhere: does removing it from the object alone take the value out of the caption?
- **steering**: ``h_p <- h_p + s u`` at the image tokens on the token object (the first object whose shape is
  the token of interest; without ground truth, every image token), with ``s`` the strength factor
  (``image_strength_factor``, :data:`~mmconcepts.evaluation.causal.settings.DEFAULT_IMAGE_STRENGTH_FACTOR`)
  times the concept's typical contribution (its mean positive activation over the training patches times
  ``||u_k||``), and ``u`` the concept's unit direction or a control's: ``random`` (same norm), ``centred``
  (less the mean training patch) and ``diffmean`` (the mean of the concept's top training patches, ``N // K``
  of them, less the mean of the rest).

Where and when (:class:`PatchIntervention`)
-------------------------------------------
At an image-side layer (a vision encoder layer ``vision.I`` or the ``projector``; concepts learnt on such a
store) the same edits are made to the layer's patch states, the prompt positions mapped to patch indices
(:class:`~mmconcepts.models.patch_edit.PatchIntervention` counts them from the end of the layer's sequence,
behind a class token). The edit happens in the prompt's forward pass only (the first forward call of
``generate``, the prefill), at the layer's output: the later layers of the prompt read the edited states, and their keys and values go
into the key/value cache, so every decoding step attends to the edited image (the image tokens are not run
again, and the edit is not applied twice). No prompt cache is used
(:class:`~mmconcepts.models.prompt_cache.PromptCache` holds the prompt read *without* the edit); a forward pass
whose first call is shorter than the prompt is refused. At the final norm (``"norm"``) an image-token edit
changes nothing that generation reads (only the last position's logits are used): use a decoder layer.

Targets
-------
On ShapesWorld a concept's target is the value its top training patches lie on (:func:`patch_targets`: at
least half of its 20 top patches, a shape excluded, as for word concepts), not its first word through the
unembedding: at image tokens of early layers the logit lens mostly reads prompt words ("user", "assistant")
and "top", so those targets said little about the concept (ablation success with them: 0.09 at layer 1 of the
demo). Without patch truth, the first words are the targets, as for word concepts.

Defaults, and why
-----------------
Measured with ``benchmarks/causal_image_tokens.py`` (ShapesWorld train n=300, test n=60, data seeds 2s / 2s+1
for s = 0, 1, 2; token "circle", teacher mode, Semi-NMF K=20 at each layer; 5-9 concepts with a target a layer):

- **steering strength factor 16** (:data:`~mmconcepts.evaluation.causal.settings.DEFAULT_IMAGE_STRENGTH_FACTOR`,
  the word position's): with first-word targets, factors 0.5-4 steered 0.00 at layers 1 and 2, 8 / 16 / 32
  0.006 / 0.011-0.038 / no more, fluency >= 0.99 throughout; with patch targets at 16, layer 0 steers
  0.69 / 0.69 / 0.54 (a random direction 0.04 / 0.03 / 0.03, fluency 1.00).
- **ablate where active**: the concept's whole contribution to the image, as the word-position ablation
  removes it from the one state it lives in; ``"object"`` is the narrower test.

What the scores say (seeds 0 / 1 / 2)
-------------------------------------
- *Ablation works in the first layers.* Where active: layer 0 0.75 / 0.80 / 0.75 (specificity 0.86 / 0.75 /
  0.71), layer 1 0.81 / 0.97 / 0.83 (specificity 0.74 / 0.79 / 0.75), layer 2 0.13 / 0.31 / 0.24. Over the token
  object's patches only, layer 0: 0.59 / 0.55 / 0.58 with specificity 0.91 / 0.79 / 0.81. The word-position
  concepts' ablation never worked (0.00): the attribute is kept in the image tokens.
- *Specificity stays below 0.9 where active*: removing a colour wherever it is active also changes the other
  objects of that colour, which specificity counts against the concept.
- *The last decoder layer and the final norm cannot bite.* Keys and values of layer ``l`` are computed from
  its input, so an edit of the *output* of the last decoder layer (``"3"`` here) or of ``"norm"`` at the image
  tokens reaches only those positions' logits, which generation never reads: captions stay as they were. The
  floor of ablation success is then the captioner's own error on the value (an image whose caption before
  already missed it counts as removed).
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.patch_edit import PatchIntervention
from mmconcepts.evaluation.causal.interventions import _Runner
from mmconcepts.evaluation.causal.settings import ABLATE_WHERE

__all__ = ["ImageRunner", "PatchIntervention", "patch_targets"]


class ImageRunner(_Runner):
    """The test images of an image-token concepts folder (one per ``index`` of the test rows), their captions
    before, their image tokens' prompt positions and, on ShapesWorld, those on the token object; ``run`` edits
    the image tokens (:class:`PatchIntervention`) instead of the token's step."""

    def __init__(self, concepts, test_meta, model, n_images, seed, batch_size, ablate_where: str = "active"):
        import torch

        if ablate_where not in ABLATE_WHERE:
            raise MMConceptsError(f"unknown ablate_where {ablate_where!r}: choose {' or '.join(ABLATE_WHERE)}")
        if any("patch" not in m or "position" not in m for m in test_meta):
            raise MMConceptsError("the concepts were learnt on image tokens but the test rows are not image-token "
                                  "rows; extract the test features with --positions image")
        self.patch_rows: dict = {}
        for m in test_meta:
            self.patch_rows.setdefault(m["index"], []).append(m)
        self.ablate_where = ablate_where
        super().__init__(concepts, test_meta, model, n_images, seed, batch_size)
        self.positions, self.lengths, self.on_object = [], [], []
        for i, (m, pil) in enumerate(zip(self.meta, self.pils)):
            rows = sorted(self.patch_rows[m["index"]], key=lambda r: r["patch"])
            positions, length = self._prompt_positions(pil, rows)
            self.positions.append(positions)
            self.lengths.append(length)
            truth = self.truth[i]
            on = torch.tensor([truth is not None and r.get("object") == truth for r in rows], dtype=torch.bool)
            self.on_object.append(positions[on])
        self.shapes = all("attributes" in m for m in self.meta)
        if ablate_where == "object" and not self.shapes:
            raise MMConceptsError("ablate_where='object' needs each test image's token object (ShapesWorld "
                                  "attributes); use ablate_where='active'")

    @staticmethod
    def _unique(test_meta):
        rows, seen = [], set()
        for m in test_meta:
            if m["index"] not in seen:
                seen.add(m["index"])
                rows.append(m)
        return rows

    def _prompt_cache(self, ids):
        return None  # the interventions edit the prompt's own pass

    def _prompt_positions(self, pil, rows):
        """The image tokens' prompt positions of one image (the test rows', checked against its prompt) and
        the prompt's length."""
        import torch

        from mmconcepts.models.patches import image_token_id, image_token_positions

        ids = self.adapter.encode([pil], [self.prompt])["input_ids"]
        found = image_token_positions(ids[0], image_token_id(self.adapter, ids)).cpu()
        positions = torch.tensor([r["position"] for r in rows], dtype=torch.long)
        if not torch.equal(found, positions):
            raise MMConceptsError(f"the test rows of {rows[0]['image']} place {positions.numel()} image tokens "
                                  f"where the prompt holds {found.numel()}; extract the test features with the "
                                  "concepts' model and instruction")
        return positions, int(ids.shape[1])

    def targets(self, mode: str) -> list:
        """Per test image, the prompt positions an intervention of ``mode`` edits."""
        if mode == "add":
            return self.on_object if self.shapes else self.positions
        return self.on_object if self.ablate_where == "object" else self.positions

    def run(self, indices, steering: dict, per_row: dict | None = None) -> list[str]:
        """The captions of images ``indices`` with ``steering`` (``layer``; ``mode="ablate"`` with
        ``dictionary``) applied at their image tokens, ``per_row`` its keywords one per index (``direction``
        and ``strength``, or ``concept``)."""
        from mmconcepts.models.generation import decode, generate_ids

        if not indices:
            return []
        mode = steering.get("mode", "add")
        where = self.targets(mode)
        positions = [where[i] for i in indices]
        lengths = [self.lengths[i] for i in indices]
        tokens = [self.positions[i] for i in indices]  # the image side edits these tokens' patches

        def context(rows: slice) -> PatchIntervention:
            share = {key: value[rows] for key, value in (per_row or {}).items()}
            return PatchIntervention(self.adapter, steering["layer"], positions[rows], lengths[rows], mode=mode,
                                     dictionary=steering.get("dictionary"), image_tokens=tokens[rows], **share)

        pils = [self.pils[i] for i in indices]
        return decode(self.adapter, generate_ids(self.adapter, pils, self.prompt, **self._generation(),
                                                 context=context))


def patch_targets(concepts, indices=None) -> list[tuple[int, tuple, list]] | None:
    """On ShapesWorld, ``(k, target, words)`` of the image-token concepts to evaluate, each concept's target the
    value its top training patches lie on (:func:`~mmconcepts.evaluation.grounding.patches.patch_values`, kept
    when at least half of them do, and not a shape: the token object is defined by its shape) rather than its
    first word through the unembedding, which at image tokens mostly reads prompt words; ``None`` where the
    training rows carry no patch truth."""
    from mmconcepts.evaluation.causal.interventions import N_WORDS
    from mmconcepts.evaluation.grounding.patches import MIN_SHARE, has_patch_truth, patch_values

    meta = concepts.train_meta()
    if not has_patch_truth(meta):
        return None
    values = patch_values(concepts.activations, meta)
    chosen = []
    for k in range(concepts.n_concepts) if indices is None else indices:
        value, share = values[k]
        if value is not None and share >= MIN_SHARE and value[0] != "shape":
            chosen.append((k, value, concepts.words(k)[:N_WORDS]))
    return chosen
