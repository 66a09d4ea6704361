"""The mean state of mean ablation: a layer's state averaged over every position of whole sequences.

Mean ablation, as the sparse-autoencoder literature means it, replaces a state by the layer's *average* state,
taken over every position of the text the model reads, not by the average of the states the dictionary was
learnt on. The latter are all states from which the token of interest is predicted, so their mean predicts that
token better than most real states do (on the demo: cross-entropy 0.18 against the clean 0.89) and gives no
scale to measure a loss recovered against. :func:`position_mean` records the layer's states through the one
hook owner (:meth:`~mmconcepts.models.hooks.Hooks.record`, the pass stopped right after the layer) over batches
of model inputs, every real position (attention mask 1: image and prompt tokens and the teacher-forced
caption; padding left out), and sums them in float64.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["position_mean"]


def _real_positions(inputs: dict, hidden):
    """Which positions of the layer's ``B x T x D`` states are real tokens (``B x T`` booleans): the decoder's
    mask for an encoder-decoder model, else the attention mask; every position when the mask does not match the
    states (a model that expands its image tokens inside the forward pass)."""
    import torch

    mask = inputs.get("decoder_attention_mask", inputs.get("attention_mask"))
    if mask is None or tuple(mask.shape) != tuple(hidden.shape[:2]):
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return mask.to(hidden.device).bool()


def position_mean(adapter, layer, batches: Iterable[dict]):
    """The mean of ``layer``'s output state over every real position of every batch of model inputs.

    Parameters
    ----------
    adapter : ModelAdapter
    layer : str or int
        The layer (:meth:`~mmconcepts.models.base.ModelAdapter.resolve_layer`).
    batches : iterable of dict
        Model inputs (``adapter.encode`` or :func:`~mmconcepts.models.prompts.append_tokens`), each read once.

    Returns
    -------
    mean : torch.Tensor
        ``D`` float32, on the CPU.
    count : int
        The positions averaged.

    Examples
    --------
    The shipped captioner's final norm: its mean state over one image's prompt is the mean of the model's
    last hidden states.

    >>> import random, torch
    >>> from mmconcepts.data.shapesworld import render, sample_scene
    >>> from mmconcepts.models import load_model
    >>> adapter = load_model()
    >>> inputs = adapter.encode([render(sample_scene(random.Random(0)))], [adapter.prompt()])
    >>> mean, count = position_mean(adapter, "norm", [inputs])
    >>> with torch.no_grad():
    ...     states = adapter.model(**inputs, output_hidden_states=True).hidden_states[-1][0]
    >>> count == states.shape[0], torch.allclose(mean, states.mean(0), atol=1e-5)
    (True, True)
    """
    import torch

    from mmconcepts.errors import MMConceptsError

    total, count = None, 0
    for inputs in batches:
        def add(hidden, call, inputs=inputs):
            nonlocal total, count
            if call:  # one forward pass per batch
                return
            real = _real_positions(inputs, hidden)
            part = hidden[real].double().sum(0)
            total = part if total is None else total + part.to(total.device)
            count += int(real.sum())

        hooks = adapter.hooks().record(layer, add).stop_after(layer)
        with hooks, torch.inference_mode():
            hooks.forward(inputs)
    if total is None or count == 0:
        raise MMConceptsError("no position to take the mean state over; pass at least one image")
    return (total / count).float().cpu(), count
