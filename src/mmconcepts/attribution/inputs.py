"""The model's reading of an image up to the token of interest, as a batch a map method can run.

A map explains the state from which the model predicts the token of interest, so every image is read the way
its feature store read it (the store's instruction, caption length and ``also`` words, :func:`store_reading`):
in generate mode the image is captioned once (greedy) and the sequence is the prompt followed by the caption's
tokens *before* the word's first piece; in teacher mode the given caption takes the caption's place. The last
position of the sequence is then the token's state.

:func:`read_images` does that for a list of images (one ``generate`` call per ``batch_size`` images) and
returns one :class:`TokenReading` per image; :func:`batch_inputs` turns any list of readings (the same
image repeated, occluded copies, ...) into the model's keyword arguments: the processor's outputs for the
images with the prompt, each row's caption prefix appended and the rows left padded again, so the last
position is every row's token state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmconcepts.errors import MMConceptsError

__all__ = ["TokenReading", "batch_inputs", "read_images", "read_rows"]


@dataclass
class TokenReading:
    """One image read up to the token of interest.

    Attributes
    ----------
    image : PIL.Image.Image
        The image (RGB).
    prefix : list of int
        The caption's token ids before the token of interest (empty when it is the first word).
    caption : str
        The caption the model generated (or the one read in teacher mode).
    found : bool
        Whether the token of interest is in the caption; a reading without it has no state to explain.
    """

    image: object
    prefix: list[int] = field(default_factory=list)
    caption: str = ""
    found: bool = True


def read_images(adapter, images: list, reading: dict, *, mode: str = "generate", captions=None,
                batch_size: int = 16) -> list[TokenReading]:
    """Read every image up to the token of interest (module docstring).

    Parameters
    ----------
    adapter : ModelAdapter
        The loaded model.
    images : list of PIL.Image.Image
        The images, already loaded.
    reading : dict
        :func:`~mmconcepts.extract.extraction.store_reading` of the concepts' store (token, also,
        instruction, caption lengths).
    mode : ``"generate"`` or ``"teacher"``
        The model's own caption, or ``captions``.
    captions : list of str or None
        Teacher mode: one caption per image.
    batch_size : int
        Images per ``generate`` call.

    Returns
    -------
    list of TokenReading
    """
    from mmconcepts.extract.token_match import WordMatcher
    from mmconcepts.models.generation import decode, generate_ids

    matcher = WordMatcher(reading["token"], reading["also"])
    prompt = adapter.prompt(reading["instruction"])
    tokenizer = adapter.tokenizer
    if mode == "teacher":
        if captions is None or len(captions) != len(images):
            raise MMConceptsError("teacher mode needs one caption per image")
        return [_teacher(adapter, image, prompt, caption, matcher) for image, caption in zip(images, captions)]
    if mode != "generate":
        raise MMConceptsError(f"unknown mode {mode!r}: choose generate or teacher")
    out = []
    new = generate_ids(adapter, images, prompt, max_new_tokens=reading["max_new_tokens"],
                       min_new_tokens=reading["min_new_tokens"], batch_size=batch_size)
    for image, ids, text in zip(images, new, decode(adapter, new)):
        found = matcher.first_piece(tokenizer, ids)
        out.append(TokenReading(image, list(ids[:found[0]]) if found else [], text, found is not None))
    return out


def read_rows(adapter, images: list, rows: list[dict], reading: dict, *, mode: str = "generate",
              batch_size: int = 16) -> list[TokenReading]:
    """:func:`read_images` for images a feature store already read: its metadata ``rows`` (``caption``,
    ``position``) give the caption, so the images need not be captioned again.

    In generate mode a row's caption is tokenized again; where that does not put the word's first piece at the
    row's ``position`` (a tokenizer whose round trip changes the pieces) the image is captioned again. In
    teacher mode the row's caption is read as :func:`read_images` reads a given caption.
    """
    from mmconcepts.extract.token_match import WordMatcher

    if mode == "teacher":
        return read_images(adapter, images, reading, mode="teacher", captions=[r.get("caption", "") for r in rows])
    matcher = WordMatcher(reading["token"], reading["also"])
    tokenizer = adapter.tokenizer
    out: list = [None] * len(images)
    for i, (image, row) in enumerate(zip(images, rows)):
        ids = tokenizer(row.get("caption") or "", add_special_tokens=False)["input_ids"]
        found = matcher.first_piece(tokenizer, ids) if ids else None
        if found is not None and found[0] == row.get("position"):
            out[i] = TokenReading(image, list(ids[:found[0]]), row["caption"], True)
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        again = read_images(adapter, [images[i] for i in missing], reading, batch_size=batch_size)
        for i, r in zip(missing, again):
            out[i] = r
    return out


def _teacher(adapter, image, prompt: str, caption: str, matcher) -> TokenReading:
    """The caption's ids up to the word's first piece, read after the prompt as teacher mode reads them."""
    from mmconcepts.models.base import encode_inputs

    match = matcher.find(caption or "")
    if match is None:
        return TokenReading(image, [], caption or "", False)
    from mmconcepts.extract.token_match import pieces
    from mmconcepts.models.prompts import teacher_appends

    if teacher_appends(adapter, prompt):  # the caption follows the processor's own tokens, as generation does
        ids, piece = pieces(adapter.tokenizer, caption, match[0])
        return TokenReading(image, ids[:piece], caption, True)
    sep = "" if prompt[-1:].isspace() else " "
    start = len(prompt) + len(sep) + match[0]
    head = encode_inputs(adapter.processor, [image], [prompt])["input_ids"][0].tolist()
    full = encode_inputs(adapter.processor, [image], [prompt + sep + caption])["input_ids"][0].tolist()
    text_ids, piece = pieces(adapter.tokenizer, prompt + sep + caption, start)
    position = len(full) - (len(text_ids) - piece)  # the piece's index in the whole sequence
    if full[:len(head)] != head or position < len(head):
        raise MMConceptsError(f"teacher mode cannot align the caption tokens of {adapter.model_id} after its "
                              "prompt; use --mode generate")
    return TokenReading(image, full[len(head):position], caption, True)


def batch_inputs(adapter, readings: list[TokenReading], prompt: str) -> dict:
    """The model's inputs for ``readings``: the processor's outputs for their images with ``prompt``, each
    row's caption prefix appended, left padded again (on the model's device;
    :func:`~mmconcepts.models.prompts.append_tokens`)."""
    from mmconcepts.models.prompts import append_tokens

    return append_tokens(adapter, [r.image for r in readings], prompt, [list(r.prefix) for r in readings])
