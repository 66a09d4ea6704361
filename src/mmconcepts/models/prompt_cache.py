"""Each distinct image's prompt read once: the generations of a few images many times over start from it.

The causal evaluation captions each of its test images some seventy times (once per concept and direction),
always with the same prompt: reading the image and the prompt (the vision tower and the prompt's forward pass)
is then most of the work, and the same each time. :class:`PromptCache` reads every distinct image with the
prompt once, all but the prompt's last token, and keeps the model's key/value cache of it;
:func:`~mmconcepts.models.generation.generate_ids` given the cache starts each generation of one of those images
from its rows of the cache and reads only the last prompt token itself.

The first forward call of such a generation is then that one token, not the whole prompt: an intervention that
edits only the last position of each call (a :class:`~mmconcepts.interventions.steering.Steering` at
positions ``"token"`` or ``"after"``) acts as it does without the cache, one that edits every position
(``"all"``) does not. A cache is only built for a decoder-only model whose processor gives every image the same
number of prompt tokens, and within :data:`MAX_BYTES`; the caller checks that generations from it are the
plain ones (as :class:`~mmconcepts.evaluation.causal.interventions` does on its captions before).

Examples
--------
>>> import random
>>> from mmconcepts.data.shapesworld import render, sample_scene
>>> from mmconcepts.models import load_model
>>> from mmconcepts.models.generation import generate_ids
>>> adapter = load_model()
>>> images = [render(sample_scene(random.Random(i))) for i in range(2)]
>>> cache = PromptCache.build(adapter, images, adapter.prompt())
>>> many = [images[0], images[1], images[0]]
>>> plain = generate_ids(adapter, many, adapter.prompt(), max_new_tokens=8)
>>> generate_ids(adapter, many, adapter.prompt(), max_new_tokens=8, prompt_cache=cache) == plain
True
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_BYTES", "PromptCache"]

#: The most bytes a prompt cache may hold (on the model's device); above it there is none.
MAX_BYTES = 1 << 30


def _layers(cache) -> list[tuple]:
    """``[(keys, values)]`` of each layer of a transformers cache (``B x heads x T x d`` each)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [cache[i] for i in range(len(cache))]


def _cache_keyword() -> str:
    """The name of the key/value cache in transformers' keywords and outputs: ``cache`` from transformers 5,
    ``past_key_values`` before."""
    from transformers import __version__

    return "cache" if int(__version__.split(".")[0]) >= 5 else "past_key_values"


class PromptCache:
    """The key/value cache of every distinct image read with one prompt (all but its last token); see the module
    docstring. Build it with :meth:`build`; :meth:`inputs` gives a batch's generation inputs from it.

    Parameters
    ----------
    prompt : the prompt it was read with.
    input_ids, attention_mask : the whole prompt's ids and mask, one row per distinct image.
    layers : each layer's ``(keys, values)`` of those rows.
    rows : ``id(image) -> row`` of each distinct image (images are told apart by identity).
    """

    def __init__(self, prompt: str, input_ids, attention_mask, layers: list[tuple], rows: dict[int, int]):
        self.prompt, self.input_ids, self.attention_mask = prompt, input_ids, attention_mask
        self.layers, self.rows = layers, rows

    @classmethod
    def checked(cls, adapter, images: Sequence, prompt: str, ids: list[list[int]], *, batch_size: int = 32,
                **generation) -> PromptCache | None:
        """:meth:`build`, kept only when generating from it (``generate_ids(..., **generation)``) gives back the
        plain generations ``ids`` exactly; ``None`` otherwise, or where building it fails: a cache is an
        optimisation only, and a model it does not fit reads each image again."""
        from mmconcepts.models.generation import generate_ids

        try:
            cache = cls.build(adapter, images, prompt, batch_size=batch_size)
            same = cache is not None and generate_ids(adapter, images, prompt, batch_size=batch_size,
                                                      prompt_cache=cache, **generation) == ids
        except Exception:  # noqa: BLE001 (an optimisation only)
            return None
        return cache if same else None

    @classmethod
    def build(cls, adapter, images: Sequence, prompt: str, *, batch_size: int = 32) -> PromptCache | None:
        """Read each distinct image of ``images`` (by identity) with ``prompt``, the first alone (what one image's
        cache weighs), then ``batch_size`` at a time; ``None`` where a cache does not apply (an encoder-decoder
        model, prompts of different lengths, a cache above :data:`MAX_BYTES`)."""
        import torch

        if adapter.is_encoder_decoder:
            return None
        distinct = list({id(image): image for image in images}.values())
        batches = [distinct[:1]] + [distinct[s:s + batch_size] for s in range(1, len(distinct), batch_size)]
        parts, ids, masks = [], [], []
        for batch in batches:
            inputs = adapter.encode(batch, [prompt] * len(batch))
            full, mask = inputs["input_ids"], inputs["attention_mask"]
            if not bool(mask.all()) or (ids and full.shape[1] != ids[0].shape[1]):
                return None  # padded prompts: the batches of generation would pad them otherwise
            # the prompt but its last token; per-token inputs (token type ids, ...) cut alike
            rest = {k: v[:, :-1] if torch.is_tensor(v) and v.shape[:2] == full.shape else v
                    for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                out = adapter.model(input_ids=full[:, :-1], attention_mask=mask[:, :-1], use_cache=True, **rest)
            part = _layers(out.get(_cache_keyword()))
            if not parts and sum(t.numel() * t.element_size() for pair in part for t in pair) * len(distinct) \
                    > MAX_BYTES:
                return None  # the whole cache would not fit: read the images each time
            parts.append(part)
            ids.append(full)
            masks.append(mask)
        layers = [tuple(torch.cat([p[i][j] for p in parts]) for j in (0, 1)) for i in range(len(parts[0]))]
        return cls(prompt, torch.cat(ids), torch.cat(masks), layers, {id(im): r for r, im in enumerate(distinct)})

    def inputs(self, images: Sequence, prompt: str) -> dict:
        """The generation inputs of ``images`` (each one of the cache's): the whole prompt's ids and mask, and a
        fresh cache of their rows (generation extends it)."""
        import torch
        from transformers import DynamicCache

        from mmconcepts.errors import MMConceptsError

        if prompt != self.prompt:
            raise MMConceptsError("the prompt cache was read with another prompt; build it with this one")
        rows = torch.tensor([self.rows[id(image)] for image in images], device=self.input_ids.device)
        cache = DynamicCache()
        for i, (keys, values) in enumerate(self.layers):
            cache.update(keys[rows], values[rows], i)
        return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows],
                _cache_keyword(): cache}
