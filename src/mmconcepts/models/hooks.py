"""The one owner of forward hooks: :class:`Hooks`, entered and left as one context manager.

Every stage that reads or edits hidden states during a forward pass goes through it: extraction's recorders
(:mod:`~mmconcepts.extract.recorders`), the concept maps (:mod:`~mmconcepts.attribution.methods`) and
:class:`~mmconcepts.interventions.steering.Steering`. Operations name layers as
:meth:`~mmconcepts.models.base.ModelAdapter.resolve_layer` does (an index, negative allowed, or ``"norm"``) and
read and write a layer's ``B x T x D`` hidden states through
:meth:`~mmconcepts.models.base.ModelAdapter.hidden_from_output` /
:meth:`~mmconcepts.models.base.ModelAdapter.replace_hidden`, so every family's output shape works (a tensor, a
tuple, Gemma 3n's stacked streams).

One forward hook (and, for :meth:`Hooks.before` / :meth:`Hooks.stop_before`, one pre-hook) is registered per
hooked layer while the context is entered; its operations run in the order they were added. On exit, normal or
by an exception, every handle is removed and the model is as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Hooks", "LayerEdit", "StopForward"]

#: ``fn(hidden, call)``: the ``B x T x D`` hidden states and the layer's forward call index since entry (0-based).
#: An intervening callback returns the new hidden states, or ``None`` to leave them as they are.
Callback = Callable[["object", int], "object | None"]


class StopForward(Exception):
    """Raised by a :meth:`Hooks.stop_after` / :meth:`Hooks.stop_before` hook to end the forward pass; caught by
    :meth:`Hooks.forward` of the same :class:`Hooks` only."""

    def __init__(self, owner: "Hooks", layer: str):
        super().__init__(f"forward pass stopped at layer {layer}")
        self.owner = owner
        self.layer = layer


@dataclass(frozen=True)
class _Op:
    kind: str  # "record", "intervene" or "stop" (after the layer); "before" or "stop_before" (its input)
    layer: str
    fn: Callback | None = None


class Hooks:
    """Forward hooks on the layers of one adapter's model, held together and removed together.

    Build it with :meth:`~mmconcepts.models.base.ModelAdapter.hooks`, add operations (each returns the
    :class:`Hooks`, so they chain), then enter it: the hooks exist only inside the ``with`` block. It may be
    entered again after it exits (the call counts restart), but not twice at once.

    Parameters
    ----------
    adapter : ModelAdapter
        The loaded model whose layers are hooked.

    Attributes
    ----------
    calls : dict of str to int
        Forward calls of each hooked layer since the context was last entered (canonical layer names). In
        ``generate`` call 0 is the prompt's prefill and call ``t > 0`` the ``t``-th decoding step.

    Examples
    --------
    Record the final norm's states of one forward pass of the shipped captioner: they are the model's
    ``hidden_states[-1]``, and once the block exits the model holds the hooks it held before (transformers
    installs hooks of its own on the first forward pass; none of ours is left):

    >>> import random, torch
    >>> from mmconcepts.data.shapesworld import render, sample_scene
    >>> from mmconcepts.models import load_model
    >>> adapter = load_model()
    >>> image = render(sample_scene(random.Random(0)))
    >>> inputs = adapter.encode([image], [adapter.prompt()])
    >>> with torch.no_grad():
    ...     expected = adapter.model(**inputs, output_hidden_states=True).hidden_states[-1]
    >>> def installed():
    ...     return [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in adapter.model.modules()]
    >>> untouched, seen = installed(), []
    >>> with adapter.hooks().record("norm", lambda hidden, call: seen.append(hidden)) as hooks, torch.no_grad():
    ...     logits = adapter.model(**inputs).logits
    >>> torch.equal(seen[0], expected), hooks.calls
    (True, {'norm': 1})
    >>> installed() == untouched
    True

    Stop after layer 0 (nothing later runs) and read its states:

    >>> hooks = adapter.hooks().record(0, lambda hidden, call: seen.append(hidden)).stop_after(0)
    >>> with hooks, torch.no_grad():
    ...     hooks.forward(inputs) is None
    True
    >>> tuple(seen[-1].shape) == (1, inputs["input_ids"].shape[1], adapter.hidden_size)
    True
    """

    def __init__(self, adapter):
        self.adapter = adapter
        self.calls: dict[str, int] = {}
        self._ops: list[_Op] = []
        self._handles: list = []
        self._entered = False

    # ---- operations ------------------------------------------------------------------------------------------
    def _add(self, kind: str, layer, fn: Callback | None = None) -> "Hooks":
        if self._entered:
            raise RuntimeError("add hooks before entering the context")
        self._ops.append(_Op(kind, self.adapter.resolve_layer(layer), fn))
        return self

    def record(self, layer, fn: Callback) -> "Hooks":
        """Call ``fn(hidden, call)`` with the layer's output hidden states (``B x T x D``) at every forward call;
        what it returns is ignored. The states are the model's own tensor: detach or copy what you keep."""
        return self._add("record", layer, fn)

    def intervene(self, layer, fn: Callback) -> "Hooks":
        """Replace the layer's output hidden states with ``fn(hidden, call)`` (``None``: leave them as they are);
        later operations on the layer and the rest of the model see the replacement."""
        return self._add("intervene", layer, fn)

    def before(self, layer, fn: Callback) -> "Hooks":
        """Read, or replace with ``fn(hidden, call)``'s non-``None`` result, the hidden states a layer receives
        (its positional input, or its ``hidden_states`` keyword): on decoder layer 0, the decoder's input
        embeddings (image tokens included)."""
        return self._add("before", layer, fn)

    def stop_after(self, layer) -> "Hooks":
        """End the forward pass once the layer has run (after its other operations): nothing later is computed.
        Run the pass with :meth:`forward`, which swallows this stop."""
        return self._add("stop", layer)

    def stop_before(self, layer) -> "Hooks":
        """End the forward pass before the layer runs (after its :meth:`before` operations)."""
        return self._add("stop_before", layer)

    # ---- the context -----------------------------------------------------------------------------------------
    def __enter__(self) -> "Hooks":
        if self._entered:
            raise RuntimeError("these hooks are already active; enter them once at a time")
        layers = list(dict.fromkeys(op.layer for op in self._ops))
        self.calls = {layer: 0 for layer in layers}
        self._entered = True
        try:
            for layer in layers:
                module = self.adapter.layer_module(layer)
                ops = [op for op in self._ops if op.layer == layer]
                pre = [op for op in ops if op.kind in ("before", "stop_before")]
                post = [op for op in ops if op.kind not in ("before", "stop_before")]
                if pre:
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(layer, pre),
                                                                          with_kwargs=True))
                if post:
                    self._handles.append(module.register_forward_hook(self._post_hook(layer, post, counted=bool(pre))))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._remove()
        return False

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._entered = False

    def _tick(self, layer: str) -> int:
        self.calls[layer] += 1
        return self.calls[layer] - 1

    def _pre_hook(self, layer: str, ops: list[_Op]):
        from mmconcepts.models.streams import find_stream

        def hook(module, args, kwargs):
            call = self._tick(layer)
            found = args[0] if args else kwargs["hidden_states"]
            changed = None
            for op in ops:
                if op.kind == "stop_before":
                    raise StopForward(self, layer)
                hidden, rebuild = find_stream(found, self.adapter.active_stream)
                new = op.fn(hidden, call)
                if new is not None:
                    found = changed = rebuild(new)
            if changed is None:
                return None
            if args:
                return (changed, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": changed}

        return hook

    def _post_hook(self, layer: str, ops: list[_Op], counted: bool):
        def hook(module, args, output):
            call = self.calls[layer] - 1 if counted else self._tick(layer)
            changed = None
            for op in ops:
                if op.kind == "stop":
                    raise StopForward(self, layer)
                new = op.fn(self.adapter.hidden_from_output(output), call)
                if op.kind == "intervene" and new is not None:
                    output = changed = self.adapter.replace_hidden(output, new)
            return changed

        return hook

    # ---- running ---------------------------------------------------------------------------------------------
    def forward(self, inputs: dict, **kwargs):
        """``adapter.model(**inputs, **kwargs)``; ``None`` when one of these hooks stopped the pass
        (:meth:`stop_after`), whose :class:`StopForward` is swallowed (any other exception propagates)."""
        try:
            return self.adapter.model(**inputs, **kwargs)
        except StopForward as stop:
            if stop.owner is not self:
                raise
            return None


class LayerEdit:
    """Base of an edit of one layer's hidden states, entered as a context manager around forward passes
    (:class:`~mmconcepts.interventions.steering.Steering`, the fidelity splice, the image-token interventions).

    A subclass defines ``_intervene(hidden, call)`` (the new ``B x T x D`` states, or ``None`` to leave them) and
    records what it edits in ``edited``, which :meth:`_reset` sets back on each entry (a count by default).
    The one hook is held by the adapter's :class:`Hooks`, so a second entry while active is refused and every
    exit removes it.
    """

    def __init__(self, adapter, layer):
        self.adapter = adapter
        self.layer = adapter.resolve_layer(layer)
        self._reset()
        self._hooks = adapter.hooks().intervene(self.layer, self._intervene)

    def _reset(self) -> None:
        self.edited = 0

    def _intervene(self, hidden, call: int):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self._hooks.__enter__()  # refuses a second entry while active
        self._reset()
        return self

    def __exit__(self, *exc) -> bool:
        return self._hooks.__exit__(*exc)
