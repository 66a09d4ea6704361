"""Concepts the model actually uses: steer the model with a concept, or ablate a concept, and see what it says.

A concept of a dictionary learnt at one layer is a direction ``u_k`` of that layer's hidden states. Two
interventions put it to the test while the model generates:

``mode="add"`` (steering)
    ``h <- h + strength * u`` at the chosen positions: does the model now talk about the concept?
``mode="ablate"``
    ``h <- h - v_k(h) u_k``, with ``v_k(h)`` the concept's (one-sided) activation of ``h`` under the
    dictionary (:meth:`~mmconcepts.concepts.concept_set.ConceptSet.encode`): the concept's contribution to
    ``h`` is removed, wherever it is active. A state in which the concept is inactive is left as it is.

:class:`Steering` is the intervention itself, a context manager holding one forward hook on the layer through
the adapter's hook owner (:class:`~mmconcepts.models.hooks.Hooks`; no global state; the model is unchanged once
the context exits), usable in any generation loop::

    with Steering(adapter, "norm", u, 8.0, positions="after", step=3):
        out = adapter.model.generate(**inputs, max_new_tokens=20, do_sample=False)

:func:`steer` runs it on images the way the concepts' feature store read its images: caption each image,
find the step at which the token of interest is predicted, caption it again with the intervention.

Directions
----------
``"concept"``
    The concept's own unit direction (:func:`concept_direction`).
``"random"``
    A random direction of the same norm (:func:`random_direction`): the control. A concept that changes
    the captions no more than a random direction of the same strength is not one the model uses.
``"diffmean"``
    The difference of the mean states of the concept's most activating training samples and of the rest
    (:func:`diffmean_direction`), normalised: the strong baseline of steering benchmarks (AxBench's
    DiffMean), which a dictionary's direction should match.

:func:`steer` adds each as a *unit* direction, so one strength means one norm of the added vector for all
three. Its default strength is :func:`default_strength`: the concept's typical contribution times
:data:`STRENGTH_FACTOR`.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.hooks import LayerEdit
from mmconcepts.interventions.directions import _choice, _finite, _points, check_concept

#: What the intervention does.
MODES = ("add", "ablate")
#: Where the intervention applies (see :class:`Steering`).
POSITIONS = ("token", "after", "all")


class Steering(LayerEdit):
    """A forward hook on one layer that adds a direction to, or ablates a concept from, its hidden states.

    Its hook is held by the adapter's hook owner (:meth:`~mmconcepts.models.base.ModelAdapter.hooks`, one
    :meth:`~mmconcepts.models.hooks.Hooks.intervene`); it exists only inside the ``with`` block, and the model
    is unchanged (bit for bit) once the block exits.

    Parameters
    ----------
    adapter : ModelAdapter
        The loaded model.
    layer : str or int
        The layer whose output is edited (:meth:`~mmconcepts.models.ModelAdapter.resolve_layer`: an index,
        negative allowed, or ``"norm"``). A decoder layer's output is a tensor or a tuple whose element 0
        is the hidden state; only that element is replaced.
    direction : ``D`` (or ``B x D``) tensor or array, optional
        ``u`` of ``mode="add"``, used as given (not normalised); cast to the hidden state's device and dtype.
        A ``B x D`` matrix gives each row of the batch its own direction (many interventions in one batch).
    strength : float or sequence of float
        ``s`` of ``mode="add"``: ``h <- h + (s * u)`` (``s * u`` computed in float32, then cast); one per row
        of the batch is allowed too.
    mode : ``"add"`` or ``"ablate"``
        ``"ablate"`` needs ``dictionary`` and ``concept``: the hidden states are encoded with the dictionary
        (``v = dictionary.encode(h)[:, concept]``, the concept's one-sided activation) and
        ``h <- h - v * u_concept`` wherever ``v > 0`` (``u_concept = dictionary.directions[concept]``, as it
        is, so ``v * u`` is the concept's term of the dictionary's reconstruction of ``h``). A state with
        ``v == 0`` is left untouched. The layer must be the one the dictionary was learnt at.
    dictionary : ConceptSet, optional
        The concepts of ``mode="ablate"`` (anything with ``encode(Z)`` and ``directions``).
    concept : int or sequence of int, optional
        The concept index of ``mode="ablate"``, or one per row of the batch.
    positions : ``"token"``, ``"after"`` or ``"all"``
        Which states are edited. Forward calls of the layer are counted from the entry of the context: in
        ``generate`` call 0 is the prompt's prefill, whose *last* position predicts the first new token, and
        call ``t > 0`` is the ``t``-th decoding step, which holds one position, from which new token ``t``
        is predicted. So *step* ``t`` is the position from which generated token ``t`` (0-based) is
        predicted, and

        - ``"token"``: only step ``step``: the last position of call ``step``;
        - ``"after"``: step ``step`` and every later step: the last position of every call ``>= step``
          (prompt positions before the last are never edited);
        - ``"all"``: every position of every call, the prompt included (``step`` is ignored).

        This assumes the default ``generate`` of transformers: one forward call for the whole prompt, then
        one per token with the KV cache (no ``use_cache=False``, which re-runs earlier positions unedited; no
        prefill chunking, no assisted decoding). A plain forward pass is call 0. Use one context per
        ``generate`` call (entering it again restarts the count).
    step : int or sequence of int, optional
        The step of ``"token"``/``"after"``, one for the whole batch or one per row of the batch (rows are
        edited at their own step; every row of a batch generates in lockstep). Default 0: the first new token.
        :func:`steer` finds it with a first, unsteered generation (the first piece of the token of interest).

    Attributes
    ----------
    calls : int
        Forward calls of the layer seen since the context was entered.
    edited : list of int
        The calls in which some state was changed.

    Examples
    --------
    The shipped captioner pushed towards its unembedding of "blue" from step 6 (where it says "red") on:

    >>> import random
    >>> from mmconcepts.data.shapesworld import render, sample_scene
    >>> from mmconcepts.models import load_model
    >>> adapter = load_model()
    >>> image = render(sample_scene(random.Random(0)))
    >>> adapter.caption([image])
    ['one triangle at the top in red of little size and one triangle in purple at the bottom of little size']
    >>> blue = adapter.lm_head().weight[adapter.tokenizer.convert_tokens_to_ids("blue")]
    >>> with Steering(adapter, "norm", blue / blue.norm(), 8.0, positions="after", step=6) as steering:
    ...     adapter.caption([image])
    ['one triangle at the top in red of blue and one bottom blue blue blue blue']
    >>> steering.edited[:3]
    [6, 7, 8]
    >>> adapter.caption([image])          # the model is unchanged once the block exits
    ['one triangle at the top in red of little size and one triangle in purple at the bottom of little size']

    A concept of a dictionary is steered with :func:`~mmconcepts.interventions.directions.concept_direction`
    as the direction (what :func:`~mmconcepts.interventions.steer_captions.steer` does for images).
    """

    def __init__(self, adapter, layer, direction=None, strength: float = 0.0, *, mode: str = "add",
                 dictionary=None, concept: int | None = None, positions: str = "after", step=None):
        import torch

        from mmconcepts.models.vision_parts import check_decoder_layer

        self.adapter = adapter
        self.layer = adapter.resolve_layer(layer)
        check_decoder_layer(self.layer, "steering and ablation")
        self.mode = _choice("mode", mode, MODES)
        self.positions = _choice("positions", positions, POSITIONS)
        self.step = self._steps(step)
        hidden = int(adapter.hidden_size)
        if self.mode == "add":
            if direction is None:
                raise MMConceptsError("mode='add' needs a direction (a D vector); see concept_direction")
            if dictionary is not None or concept is not None:
                raise MMConceptsError("mode='add' adds the direction given; dictionary= and concept= are for "
                                      "mode='ablate'")
            u = torch.as_tensor(direction).detach().float().cpu()
            u = u.reshape(-1) if u.dim() < 2 else u
            if u.dim() > 2 or u.shape[-1] != hidden:
                raise MMConceptsError(f"the direction has shape {tuple(u.shape)} but '{adapter.model_id}' has "
                                      f"hidden size {hidden}; use a direction (D, or one per row: B x D) of this "
                                      "model's feature space")
            if not bool(torch.isfinite(u).all()):
                raise MMConceptsError("the direction holds NaN or infinite values")
            if isinstance(strength, (list, tuple)) or hasattr(strength, "tolist"):
                values = [_finite("strength", float(x)) for x in torch.as_tensor(strength).reshape(-1).tolist()]
                self.strength = values
                s = torch.tensor(values, dtype=torch.float32)
                if u.dim() == 1:
                    u = u.expand(len(values), hidden)
                if len(values) != u.shape[0]:
                    raise MMConceptsError(f"{len(values)} strengths for {u.shape[0]} directions; give one per row")
                self._vector = s[:, None] * u
            else:
                self.strength = _finite("strength", strength)
                self._vector = self.strength * u
            self._per_row = self._vector.dim() == 2
        else:
            if dictionary is None or concept is None:
                raise MMConceptsError("mode='ablate' needs the dictionary (dictionary=ConceptSet) and the concept "
                                      "index (concept=k)")
            if direction is not None:
                raise MMConceptsError("mode='ablate' removes the concept's own term v_k u_k; do not pass a "
                                      "direction")
            if _points(dictionary):
                raise MMConceptsError("the concepts of this dictionary are points (K-Means, Simple), not "
                                      "directions: there is no contribution to ablate; use a direction "
                                      "dictionary (semi-nmf, nmf, pca, topk-sae)")
            many = isinstance(concept, (list, tuple)) or hasattr(concept, "tolist")
            values = list(concept.tolist() if hasattr(concept, "tolist") else concept) if many else [concept]
            if many and not values:
                raise MMConceptsError("concept= is an empty list; give one concept index, or one per row")
            values = [check_concept(dictionary, k) for k in values]
            self.concept = values if many else values[0]
            self._per_row = many
            width = int(dictionary.directions.shape[1])
            if width != hidden:
                raise MMConceptsError(f"the concepts have dimension {width} but '{adapter.model_id}' has hidden "
                                      f"size {hidden}; use the model the features were extracted with")
            learnt = (getattr(dictionary, "summary", None) or {}).get("layer")
            if learnt is not None and adapter.resolve_layer(learnt) != self.layer:
                raise MMConceptsError(f"the concepts were learnt at layer {learnt}; ablate them there, not at "
                                      f"layer {self.layer}")
            self.strength = None
            self._vector = dictionary.directions[torch.as_tensor(values) if many else values[0]].detach().float().cpu()
        self.dictionary = dictionary
        self._cast: dict = {}
        super().__init__(adapter, self.layer)

    @staticmethod
    def _steps(step):
        """``step`` as an int, or a list of ints (one per row)."""
        if step is None:
            return 0
        if hasattr(step, "tolist"):  # a tensor or an array
            step = step.tolist()
        many = isinstance(step, (list, tuple))
        values = list(step) if many else [step]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise MMConceptsError(f"the step must be an integer >= 0 (one, or one per row), got {step!r}")
        return values if many else values[0]

    # -- the hook (held by the adapter's hook owner, :class:`~mmconcepts.models.hooks.Hooks`)
    def _reset(self) -> None:
        self.edited: list[int] = []  # the forward calls edited since entry

    @property
    def calls(self) -> int:
        """Forward calls of the layer seen since the context was last entered."""
        return self._hooks.calls.get(self.layer, 0)

    def _intervene(self, hidden, call: int):
        edited = self.edit(hidden, call)
        if edited is not None:
            self.edited.append(call)
        return edited

    def _vector_like(self, hidden):
        key = (hidden.device, hidden.dtype)
        if key not in self._cast:
            self._cast[key] = self._vector.to(device=hidden.device, dtype=hidden.dtype)
        return self._cast[key]

    def _rows(self, hidden, call: int):
        """The batch rows edited at ``call`` (their last position), or ``None`` for none."""
        import torch

        if isinstance(self.step, int):
            hit = self.step == call if self.positions == "token" else self.step <= call
            return slice(None) if hit else None
        if len(self.step) != hidden.shape[0]:
            raise MMConceptsError(f"{len(self.step)} steps given for a batch of {hidden.shape[0]} rows; give one "
                                  "step per row")
        steps = torch.tensor(self.step, device=hidden.device)
        mask = steps == call if self.positions == "token" else steps <= call
        if not bool(mask.any()):
            return None
        return mask.nonzero(as_tuple=True)[0]

    def edit(self, hidden, call: int = 0):
        """The edited hidden state (``B x T x D``) of forward call ``call``, or ``None`` when unchanged."""
        import torch

        if self._per_row and self._vector.shape[0] != hidden.shape[0]:
            raise MMConceptsError(f"{self._vector.shape[0]} per-row interventions for a batch of {hidden.shape[0]} "
                                  "rows; give one per row")
        if self.positions == "all":
            return self._apply(hidden, torch.arange(hidden.shape[0]))
        rows = self._rows(hidden, call)
        if rows is None:
            return None
        last = hidden[rows, -1, :]
        index = torch.arange(hidden.shape[0])[rows.cpu() if isinstance(rows, torch.Tensor) else rows]
        changed = self._apply(last.reshape(-1, 1, hidden.shape[-1]), index)
        if changed is None:
            return None
        out = hidden.clone()
        out[rows, -1, :] = changed.reshape(last.shape)
        return out

    def _apply(self, states, rows):
        """``states`` (``R x T x D``, the batch rows ``rows``) edited, or ``None`` when nothing changes."""
        import torch

        if self.mode == "add":
            vector = self._vector_like(states)
            if self._per_row:
                return states + vector[rows.to(vector.device)][:, None, :]
            return states + vector
        vector = self._vector.to(states.device)  # float32: v * u as the dictionary's term
        if self._per_row:
            vector = vector[rows.to(vector.device)]
        R, T, D = states.shape
        flat = states.reshape(-1, D)
        with torch.no_grad():
            codes = self.dictionary.encode(flat.float())
        if self._per_row:
            concept = torch.as_tensor(self.concept)[rows].repeat_interleave(T).to(codes.device)
            v = codes.gather(1, concept[:, None])[:, 0].to(states.device)
            u = vector.repeat_interleave(T, dim=0)
        else:
            v = codes[:, self.concept].to(states.device)
            u = vector[None, :]
        active = v > 0
        if not bool(active.any()):
            return None
        removed = (flat.float() - v[:, None] * u).to(states.dtype)
        return torch.where(active[:, None], removed, flat).reshape(states.shape)


# ---- on images ------------------------------------------------------------------------------------------------
def chunk_steering(adapter, steering: dict, steps=None, per_row: dict | None = None):
    """The per-chunk context of :func:`~mmconcepts.models.generation.generate_ids`: for a chunk's ``rows`` (a
    slice of the images), a :class:`Steering` over those rows.

    Parameters
    ----------
    adapter : ModelAdapter
        The loaded model.
    steering : dict
        Keywords of :class:`Steering` shared by every row (``layer``, ``positions``, the intervention).
    steps : sequence of (int or None), optional
        Each image's own ``step`` (``None``: 0); default 0 for all.
    per_row : dict, optional
        Keywords of :class:`Steering` given one per image (``direction`` ``N x D``, ``strength``, ``concept``):
        each chunk gets its rows' share, so many interventions share a batch.

    Returns
    -------
    callable
        ``context(rows) -> Steering``.
    """
    def context(rows: slice) -> Steering:
        n = rows.stop - rows.start
        step = [0] * n if steps is None else [int(s or 0) for s in steps[rows]]
        share = {key: value[rows] for key, value in (per_row or {}).items()}
        return Steering(adapter, step=step, **steering, **share)

    return context
