"""An edit of chosen positions of one layer, in the prompt's pass: the image tokens' states, where a concept
learnt on them lives.

:class:`PatchIntervention` adds a vector at, or ablates a dictionary's concept from, given prompt positions of
each batch row (the image tokens' positions, :func:`~mmconcepts.extract.image_rows.image_positions`), in the
first forward call only (the prefill: generation's later steps read its key/value cache). The causal evaluation
of image-token concepts (:mod:`mmconcepts.evaluation.causal.image_tokens`) and their caption decoding
(:mod:`mmconcepts.concepts.caption_words`) use it; the dictionary is anything with ``encode(Z)`` and
``directions``.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError
from mmconcepts.models.hooks import LayerEdit

__all__ = ["PatchIntervention"]


class PatchIntervention(LayerEdit):
    """A forward hook on one layer that edits, in the prompt's pass only, chosen positions of each batch row.

    Parameters
    ----------
    adapter : ModelAdapter
        The loaded model.
    layer : str or int
        The layer whose output is edited.
    positions : list of 1-D long tensors
        Per batch row, the prompt positions edited (an empty tensor: the row is left as it is), counted in the
        row's own (unpadded) prompt of ``lengths[row]`` tokens; with left padding they are shifted by the
        padding. At an image-side layer they are patch indices, counted from the end of the row's sequence
        (mapped from prompt positions by ``image_tokens``, or given as such with ``lengths`` the patch counts).
    lengths : list of int
        Per batch row, its prompt's length.
    image_tokens : list of 1-D long tensors, optional
        Per batch row, the prompt positions of all its image tokens, in order: at an image-side layer the
        ``positions`` (prompt positions among them) become the patches they are, whatever the caller.
    mode : ``"add"`` or ``"ablate"``
        ``"add"``: ``h <- h + strength * direction`` (one direction and strength per row); ``"ablate"``:
        ``h <- h - a_k(h) u_k`` where ``a_k(h) = dictionary.encode(h)[k] != 0`` (``u_k = dictionary.directions[k]``,
        one concept ``k`` per row), the positions where it is inactive left as they are.
    direction : ``B x D`` tensor, optional
        The directions of ``"add"``, used as given.
    strength : sequence of float, optional
        The strengths of ``"add"``, one per row.
    dictionary : ConceptSet, optional
        The concepts of ``"ablate"`` (anything with ``encode(Z)`` and ``directions``).
    concept : sequence of int, optional
        The concept of ``"ablate"``, one per row.

    Attributes
    ----------
    edited : int
        The states changed (all rows) in the prompt's pass.
    edited_rows : list of int
        The states changed in each batch row.
    """

    def __init__(self, adapter, layer, positions, lengths, *, mode: str = "add", direction=None, strength=None,
                 dictionary=None, concept=None, image_tokens=None):
        import torch

        if len(positions) != len(lengths):
            raise MMConceptsError(f"{len(positions)} position lists for {len(lengths)} prompt lengths; give one "
                                  "of each per row")
        self.mode = mode
        self.positions = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in positions]
        self.lengths = [int(n) for n in lengths]
        self.left = getattr(adapter.tokenizer, "padding_side", "right") == "left"
        if mode == "add":
            if direction is None or strength is None:
                raise MMConceptsError("mode='add' needs a direction and a strength per row")
            s = torch.as_tensor(list(strength), dtype=torch.float32)
            self._vector = s[:, None] * torch.as_tensor(direction).detach().float().cpu()
        elif mode == "ablate":
            if dictionary is None or concept is None:
                raise MMConceptsError("mode='ablate' needs the dictionary (dictionary=ConceptSet) and one concept "
                                      "index per row (concept=[k, ...])")
            self.concept = torch.as_tensor(list(concept), dtype=torch.long)
            self._vector = dictionary.directions[self.concept].detach().float().cpu()
        else:
            raise MMConceptsError(f"unknown mode {mode!r}: choose add or ablate")
        if self._vector.shape[0] != len(self.positions):
            raise MMConceptsError(f"{self._vector.shape[0]} interventions for {len(self.positions)} rows; give one "
                                  "per row")
        self.dictionary = dictionary
        super().__init__(adapter, layer)
        self._image_side(adapter, image_tokens)

    def _reset(self) -> None:
        self.edited = 0
        self.edited_rows = [0] * len(getattr(self, "positions", ()))

    def _image_side(self, adapter, image_tokens) -> None:
        """At an image-side layer (``vision.I``, ``projector``) a row's positions are patch indices counted from
        the end of its sequence (a vision encoder's class token stands in front), mapped from prompt positions
        by ``image_tokens``; the vision layer the projector reads is edited in the projector's input
        (:func:`~mmconcepts.models.vision_parts.feature_layer`), one after it is refused: it feeds nothing."""
        import torch

        from mmconcepts.models.vision_parts import PROJECTOR, VISION_PREFIX, feature_layer, is_vision_layer

        if not is_vision_layer(self.layer):
            return
        self.left = True
        if image_tokens is not None:
            tokens = [torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu() for t in image_tokens]
            self.positions = [torch.searchsorted(t, p) for t, p in zip(tokens, self.positions)]
            self.lengths = [len(t) for t in tokens]
        if not self.layer.startswith(VISION_PREFIX):
            return
        index, feature = int(self.layer[len(VISION_PREFIX):]), feature_layer(adapter.model)
        if feature is None and getattr(adapter.model.config, "vision_feature_layer", None) is not None:
            raise MMConceptsError(f"'{adapter.model_id}' reads several vision layers into its projector "
                                  f"({adapter.model.config.vision_feature_layer}); an edit of one of them cannot be "
                                  "placed: use a decoder layer or the projector")
        if feature is not None and index > feature:
            raise MMConceptsError(f"the projector of '{adapter.model_id}' reads {VISION_PREFIX}{feature}, so an edit "
                                  f"at {self.layer} changes nothing; use {VISION_PREFIX}{feature} or an earlier layer")
        if index == feature:
            self._hooks = adapter.hooks().before(PROJECTOR, self._intervene)

    def _intervene(self, hidden, call: int):
        return self.edit(hidden) if call == 0 else None  # the prompt's pass only: decoding reads its cache

    def _where(self, hidden):
        """``(rows, columns)`` of the edited states in ``hidden`` (``B x T x D``)."""
        import torch

        B, T = hidden.shape[:2]
        if B != len(self.positions):
            raise MMConceptsError(f"{len(self.positions)} rows of positions for a batch of {B}; give one per row")
        rows, columns = [], []
        for r, (p, n) in enumerate(zip(self.positions, self.lengths)):
            if T < n:
                raise MMConceptsError(f"the first forward pass holds {T} positions, the prompt {n}: the image-token "
                                      "intervention edits the prompt's pass; generate without a prompt cache")
            rows.append(torch.full((p.numel(),), r, dtype=torch.long))
            columns.append(p + (T - n if self.left else 0))
        return torch.cat(rows), torch.cat(columns)

    def edit(self, hidden):
        """The edited hidden states (``B x T x D``) of the prompt's pass, or ``None`` when nothing changes."""
        import torch

        rows, columns = self._where(hidden)
        if rows.numel() == 0:
            return None
        device = hidden.device
        states = hidden[rows.to(device), columns.to(device)].float()
        vector = self._vector.to(device)[rows.to(device)]
        if self.mode == "add":
            new = states + vector
        else:
            with torch.no_grad():
                codes = torch.as_tensor(self.dictionary.encode(states)).to(device)
            a = codes.gather(1, self.concept.to(device)[rows.to(device)][:, None])[:, 0].float()
            active = a != 0
            if not bool(active.any()):
                return None
            rows, columns = rows[active.cpu()], columns[active.cpu()]
            new = states[active] - a[active, None] * vector[active]
        self.edited += int(rows.numel())
        for r in rows.tolist():
            self.edited_rows[r] += 1
        out = hidden.clone()
        out[rows.to(device), columns.to(device)] = new.to(hidden.dtype)
        return out
