"""How a prompt is written for a model, and how a caption is put after it.

:func:`build_prompt` writes the single user turn (one image, then the instruction) with the generation
prompt, from the first of:

1. a ``--prompt-template`` (:class:`~mmconcepts.models.options.ModelOptions`, recorded in the run record
   and followed by every later stage): ``{instruction}`` is the instruction, ``{image}`` the processor's
   image placeholder, e.g. ``"Question: {instruction} Answer:"`` for a base checkpoint;
2. the processor's chat template;
3. the tokenizer's chat template (transformers 5 drops the template from some processors);
4. the documented plain prompt of a family whose checkpoints ship without a template (:data:`PLAIN_PROMPTS`);

and otherwise refuses in one line that names ``--prompt-template``.

:func:`append_tokens` builds the model's inputs for images read with the prompt and continued by given
token ids (a caption's beginning): the processor's outputs for the prompt, each row's tokens appended, rows
left padded again, every tensor aligned with ``input_ids`` extended as generation extends it. This is how
teacher mode reads a caption for a processor that puts tokens after the text (PaliGemma's ``"\\n"``, Fuyu's
and Chameleon's separators): the caption comes where generation would write it.
"""

from __future__ import annotations

import string

from mmconcepts.errors import MMConceptsError

__all__ = ["PLAIN_PROMPTS", "append_tokens", "build_prompt", "check_template", "last_positions", "teacher_appends", "trailing_tokens"]

#: ``model_type`` -> the plain prompt of families whose checkpoints have no chat template (their model cards).
PLAIN_PROMPTS = {
    "blip-2": "Question: {instruction} Answer:",
    "instructblip": "{instruction}",
    "instructblipvideo": "{instruction}",
    "fuyu": "{instruction}\n",
    "chameleon": "{instruction}{image}",
    "kosmos-2": "<grounding>{instruction}",
    "florence2": "{instruction}",
    "paligemma": "{image}{instruction}",
}
#: ``(model_type, input name)`` -> the value generation gives new tokens in an input aligned with
#: ``input_ids`` (0 unless said: a text token). PaliGemma's prefix (0) is read bidirectionally; what the model
#: writes is a suffix (1).
GENERATED_TYPE = {("paligemma", "token_type_ids"): 1}
_FIELDS = {"instruction", "image"}


def check_template(template: str) -> str:
    """``template`` when it is a format string whose only fields are ``{instruction}`` and ``{image}``."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise MMConceptsError(f"--prompt-template {template!r} is not a valid template ({exc}); write literal "
                              "braces as {{ and }}") from None
    unknown = fields - _FIELDS
    if unknown:
        raise MMConceptsError(f"--prompt-template {template!r} has unknown field(s) "
                              f"{', '.join(sorted('{' + f + '}' for f in unknown))}; use {{instruction}} and "
                              "{image} (literal braces as {{ and }})")
    return template


def image_placeholder(processor) -> str:
    """The text a prompt holds where the image goes (the processor's ``image_token``; ``<image>``)."""
    token = getattr(processor, "image_token", None)
    return token if isinstance(token, str) and token else "<image>"


def build_prompt(adapter, instruction: str) -> str:
    """The prompt of ``adapter`` for ``instruction`` (module docstring)."""
    processor = adapter.processor
    template = getattr(adapter, "prompt_template", None)
    if template:
        return check_template(template).format(instruction=instruction, image=image_placeholder(processor))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    chat = getattr(processor, "chat_template", None) or getattr(adapter.tokenizer, "chat_template", None)
    if chat:
        try:
            return processor.apply_chat_template(messages, chat_template=chat, add_generation_prompt=True,
                                                 tokenize=False)
        except Exception as exc:  # noqa: BLE001 - a template's own failure (jinja, a missing variable)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MMConceptsError(f"the chat template of '{adapter.model_id}' cannot write an image prompt ({first}); "
                                  "pass --prompt-template, e.g. \"USER: {image}\\n{instruction} ASSISTANT:\"") \
                from None
    plain = PLAIN_PROMPTS.get(getattr(adapter.model.config, "model_type", ""))
    if plain is not None:
        return plain.format(instruction=instruction, image=image_placeholder(processor))
    raise MMConceptsError(f"'{adapter.model_id}' has no chat template (neither its processor nor its tokenizer); "
                          "pass --prompt-template, e.g. \"Question: {instruction} Answer:\" (add {image} where "
                          "the model expects the image placeholder)")


def last_positions(inputs: dict):
    """Each row's last position in :func:`append_tokens`' inputs: the decoder's last real token for an
    encoder-decoder model (right padded), else the last column (left padded)."""
    import torch

    if "decoder_attention_mask" in inputs:
        return inputs["decoder_attention_mask"].sum(1).cpu() - 1
    return torch.full((inputs["input_ids"].shape[0],), inputs["input_ids"].shape[1] - 1)


def teacher_appends(adapter, prompt: str) -> bool:
    """Whether teacher mode must put the caption after the prompt's whole encoding rather than in its text:
    an encoder-decoder model (the caption is the decoder's), a processor that adds tokens after the text, or
    one that reads the text a second time (InstructBLIP's Q-Former reads the instruction, not the caption)."""
    names = getattr(adapter.processor, "model_input_names", None) or ()
    return bool(adapter.is_encoder_decoder or "qformer_input_ids" in names or trailing_tokens(adapter, prompt))


def trailing_tokens(adapter, prompt: str) -> int:
    """How many tokens the processor puts after the prompt's text (0 for most; PaliGemma's ``"\\n"``...)."""
    key = ("trailing", prompt)
    cache = adapter.__dict__.setdefault("_prompt_facts", {})
    if key not in cache:
        from PIL import Image

        from mmconcepts.models.base import encode_inputs

        row = encode_inputs(adapter.processor, [Image.new("RGB", (32, 32))], [prompt])["input_ids"][0].tolist()
        text = adapter.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        last = text[-1] if text else None
        where = max((i for i, t in enumerate(row) if t == last), default=None) if last is not None else None
        cache[key] = 0 if where is None else len(row) - 1 - where
    return cache[key]


def append_tokens(adapter, images: list, prompt: str, continuations: list[list[int]]) -> dict:
    """The model's inputs for ``images`` read with ``prompt``, row ``i`` continued by the token ids
    ``continuations[i]`` (module docstring); on the model's device."""
    import torch

    from mmconcepts.models.base import encode_inputs

    enc = encode_inputs(adapter.processor, images, [prompt] * len(images))
    if getattr(adapter, "is_encoder_decoder", False):  # the caption is the decoder's: right padded, positions
        start = adapter.decoder_start()               # are counted from the start (BART's learned ones)
        rows = [start + list(tail) for tail in continuations]
        width = max(len(r) for r in rows)
        pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else 0
        dec = torch.full((len(rows), width), pad, dtype=enc["input_ids"].dtype)
        dec_mask = torch.zeros((len(rows), width), dtype=enc["attention_mask"].dtype)
        for i, r in enumerate(rows):
            dec[i, :len(r)] = torch.tensor(r, dtype=dec.dtype)
            dec_mask[i, :len(r)] = 1
        return adapter.to_device({**enc, "decoder_input_ids": dec, "decoder_attention_mask": dec_mask})
    ids, mask = enc["input_ids"], enc["attention_mask"]
    aligned = [k for k, v in enc.items() if k not in ("input_ids", "attention_mask") and torch.is_tensor(v)
               and tuple(v.shape[:2]) == tuple(ids.shape)]
    model_type = getattr(adapter.model.config, "model_type", "")
    lengths = [int(mask[i].sum()) + len(c) for i, c in enumerate(continuations)]
    width = max(lengths)
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else 0
    new_ids = torch.full((len(images), width), pad, dtype=ids.dtype)
    new_mask = torch.zeros((len(images), width), dtype=mask.dtype)
    extra = {k: torch.zeros((len(images), width, *enc[k].shape[2:]), dtype=enc[k].dtype) for k in aligned}
    for i, tail in enumerate(continuations):
        keep = mask[i].bool()
        row = torch.cat([ids[i][keep], torch.tensor(tail, dtype=ids.dtype)])
        new_ids[i, width - len(row):] = row
        new_mask[i, width - len(row):] = 1
        for k in aligned:
            kept = enc[k][i][keep]
            extra[k][i, width - len(row):width - len(tail)] = kept
            if kept.ndim > 1:  # a per-position mask (Mllama's cross-attention one): generation repeats the last
                extra[k][i, width - len(tail):] = kept[-1]
            else:
                extra[k][i, width - len(tail):] = GENERATED_TYPE.get((model_type, k), 0)
    return adapter.to_device({**enc, "input_ids": new_ids, "attention_mask": new_mask, **extra})
