"""The ``batch x positions x width`` stream inside a decoder layer's output, whatever holds it.

A decoder layer returns its hidden states as a tensor (transformers 5), as the first item of a tuple (older
versions, or with attention weights and caches beside it), inside a model output, or, in Gemma 3n, as a stack
of AltUp streams ``streams x batch x positions x width`` of which one (``altup_active_idx``) is the
residual stream the model predicts from. :func:`find_stream` finds that ``B x T x D`` tensor and gives back
a function that rebuilds the output with an edited stream in its place, so recorders, steering and maps read
and write every family the same way.

>>> import torch
>>> out = (torch.zeros(2, 5, 8), None)
>>> hidden, rebuild = find_stream(out)
>>> tuple(hidden.shape), type(rebuild(hidden + 1)).__name__
((2, 5, 8), 'tuple')
>>> stack = torch.zeros(4, 2, 5, 8)          # AltUp: 4 streams of a 2 x 5 x 8 batch
>>> hidden, rebuild = find_stream(stack, active=0)
>>> tuple(hidden.shape), float(rebuild(hidden + 1)[0].sum()), float(rebuild(hidden + 1)[1:].sum())
((2, 5, 8), 80.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mmconcepts.errors import MMConceptsError

__all__ = ["find_stream"]


def _tensor_stream(t, active: int):
    import torch

    if t.ndim == 3:
        return t, lambda new: new
    if t.ndim == 4:  # AltUp: streams x batch x positions x width; the active stream is the residual one
        def rebuild(new):
            return torch.cat([t[:active], new[None].to(t.dtype), t[active + 1:]])

        return t[active], rebuild
    return None


def find_stream(output, active: int = 0) -> tuple["object", Callable]:
    """``(hidden, rebuild)``: the ``B x T x D`` hidden states in a layer's forward ``output`` and a function
    ``rebuild(new)`` returning the output with ``new`` in their place (the other items untouched).

    Raises
    ------
    MMConceptsError
        When the output holds no tensor of 3 (or, for stacked streams, 4) dimensions.
    """
    import torch

    if isinstance(output, torch.Tensor):
        found = _tensor_stream(output, active)
        if found is not None:
            return found
    elif isinstance(output, (tuple, list)):
        for i, item in enumerate(output):
            try:
                hidden, inner = find_stream(item, active)
            except MMConceptsError:
                continue

            def rebuild(new, i=i, inner=inner):
                items = list(output)
                items[i] = inner(new)
                return type(output)(items) if isinstance(output, list) else tuple(items)

            return hidden, rebuild
    elif isinstance(output, Mapping):
        for key in ("hidden_states", "last_hidden_state"):
            if isinstance(output.get(key), torch.Tensor):
                hidden, inner = find_stream(output[key], active)

                def rebuild(new, key=key, inner=inner):
                    output[key] = inner(new)
                    return output

                return hidden, rebuild
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    raise MMConceptsError(f"a decoder layer's output ({shape}) holds no batch x positions x width hidden states; "
                          "this architecture's layers cannot be read")
