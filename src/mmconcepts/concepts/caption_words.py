"""The caption decoding of image-token concepts: the words a concept holds up in the captions of its images.

Concepts learnt on the image tokens of a decoder layer (``extract --positions image``) are read badly through
the unembedding: at the image tokens of the first layers the logit lens reads the prompt's words ("user",
"assistant"), whatever the concept is about (README, "Concepts where the model keeps them"); those of the vision
encoder have no way through it at all (another width). What such a concept means shows in what the model *says*
about the image because of it. ``decode="caption"`` reads that, at any layer of image-token rows (a vision
encoder layer, the projector or a decoder layer):

for each concept ``k`` and each of its ``n`` top training images (distinct images, each with the caption its
store read: the model's own in generate mode, the reference in teacher mode), the caption is read after the
prompt twice, as it is and with ``k`` removed from the image tokens (patches) at its layer where it is active
(``h_p <- h_p - a_pk u_k``, :class:`~mmconcepts.models.patch_edit.PatchIntervention`, the prompt's pass), and
every token ``v`` of the vocabulary scores

    ``s_k(v) = mean over the images of sum over the caption's positions t of p(v | t) - p_ablated(v | t)``,

how much probability the concept gives ``v`` along the caption. Only tokens it raises count (the cut of
:func:`~mmconcepts.concepts.decoding.ground_words`), so a colour concept reads as its colour where the caption says
it. It costs one forward pass per (concept, image) and one per distinct image, batched; it needs the whole model,
where the other decodings need the head only.
"""

from __future__ import annotations

from mmconcepts.errors import MMConceptsError

__all__ = ["CAPTION_IMAGES", "caption_scores", "check_caption_decoding"]

#: Top training images per concept whose captions the caption decoding reads.
CAPTION_IMAGES = 8


def check_caption_decoding(concepts, adapter=None) -> None:
    """Refuse, in one line, a concepts folder (or a model) the caption decoding cannot read: the concepts must be
    learnt on image-token rows (a decoder layer, the projector or a vision encoder layer), the model loaded whole
    and not an encoder-decoder (whose image tokens and caption are in two sequences)."""
    if concepts.positions != "image":
        raise MMConceptsError("--decode caption reads concepts learnt on image tokens (extract --positions image); "
                              "these were learnt at the word's position: use --decode effect")
    if adapter is not None and getattr(adapter, "head_only", False):
        raise MMConceptsError("--decode caption reads the whole model over the concepts' images, but only its head "
                              "is loaded; pass the whole model (load_model)")
    if adapter is not None and getattr(adapter, "is_encoder_decoder", False):
        raise MMConceptsError(f"--decode caption edits the image tokens the caption is read after, and "
                              f"'{adapter.model_id}' reads its caption in a separate decoder; use --decode effect")


def _caption_pass(adapter, pils: list, captions: list[str], prompt: str, edit=None):
    """``B x V``: each row's next-token probabilities summed over its caption's positions, the caption read after
    the prompt (:func:`~mmconcepts.models.prompts.append_tokens`); ``edit(positions, width)`` returns the context
    manager that edits the image tokens (``None``: the clean pass)."""
    import contextlib
    import inspect

    import torch

    from mmconcepts.extract.image_rows import image_positions
    from mmconcepts.models.patches import patch_layout
    from mmconcepts.models.prompts import append_tokens

    tails = [adapter.tokenizer(c, add_special_tokens=False)["input_ids"] or [] for c in captions]
    inputs = append_tokens(adapter, pils, prompt, tails)
    positions = image_positions(adapter, inputs["input_ids"], [patch_layout(adapter, p.size) for p in pils])
    # the logits of the captions' positions only (each row's end), where the model can skip the others (576 image
    # tokens and the prompt of a LLaVA-1.5 row are most of it)
    keep = {"logits_to_keep": max(len(t) for t in tails) + 1} \
        if "logits_to_keep" in inspect.signature(adapter.model.forward).parameters else {}
    with (edit(positions, int(inputs["input_ids"].shape[1])) if edit is not None else contextlib.nullcontext()), \
            torch.inference_mode():
        logits = adapter.model(**inputs, **keep).logits
    starts = [logits.shape[1] - 1 - len(t) for t in tails]  # left padded: the caption is each row's end
    out = torch.zeros(len(tails), logits.shape[-1])
    for b, (start, tail) in enumerate(zip(starts, tails)):
        if tail:
            out[b] = logits[b, start:start + len(tail)].float().softmax(-1).sum(0).cpu()
    return out


def caption_scores(concepts, adapter, top_images: list[list[dict]], *, n_images: int = CAPTION_IMAGES,
                   batch_size: int = 8, load=None):
    """``K x V`` token scores of the caption decoding (module docstring).

    Parameters
    ----------
    concepts : ConceptSet
        Image-token concepts: at a decoder layer, the projector or a vision encoder layer
        (:func:`check_caption_decoding`).
    adapter : ModelAdapter
        The whole model the store was read with.
    top_images : list of (list of dict)
        Each concept's top training images (``{"image", "caption"}``, distinct images;
        :func:`~mmconcepts.concepts.concept_set.top_samples`), the first ``n_images`` read.
    n_images, batch_size : int
        Images per concept; images per forward pass.
    load : callable or None
        ``load(entry) -> PIL image`` for an entry of ``top_images``; ``None``: the file at its ``"image"``
        (images that exist only in memory, the Noise-Imgs baseline's, come with their own).

    Returns
    -------
    torch.Tensor
        ``K x V``; a concept without images scores 0 everywhere.
    """
    import torch

    from mmconcepts.data.readers import load_image
    from mmconcepts.extract.extraction import store_reading
    from mmconcepts.models.patch_edit import PatchIntervention

    layer = str(concepts.summary["layer"])
    check_caption_decoding(concepts, adapter)
    prompt = adapter.prompt(store_reading(concepts.manifest, concepts.token)["instruction"])
    chosen = [[(im["image"], im.get("caption") or "") for im in images[:n_images]] for images in top_images]
    entries = {(im["image"], im.get("caption") or ""): im for images in top_images for im in images[:n_images]}

    def pils(part):  # loaded batch by batch: never every concept's images at once
        out = []
        for pair in part:
            try:
                out.append(load(entries[pair]) if load is not None else load_image(pair[0]))
            except (OSError, ValueError) as exc:
                raise MMConceptsError(f"--decode caption reads each concept's top images, and {pair[0]} cannot be "
                                      f"read ({exc}); keep the training images where the store found them") from None
        return out

    distinct = sorted({pair for pairs in chosen for pair in pairs})
    clean = {}
    for start in range(0, len(distinct), batch_size):
        part = distinct[start:start + batch_size]
        sums = _caption_pass(adapter, pils(part), [c for _, c in part], prompt)
        clean.update(zip(part, sums))
    V = next(iter(clean.values())).shape[0] if clean else int(adapter.lm_head().weight.shape[0])
    scores = torch.zeros(len(chosen), V)
    for k, pairs in enumerate(chosen):
        for start in range(0, len(pairs), batch_size):
            part = pairs[start:start + batch_size]

            made = []

            def edit(positions, width, k=k, n=len(part)):
                made.append(PatchIntervention(adapter, layer, positions, [width] * n, mode="ablate",
                                              dictionary=concepts, concept=[k] * n, image_tokens=positions))
                return made[-1]

            ablated = _caption_pass(adapter, pils(part), [c for _, c in part], prompt, edit)
            touched = torch.tensor([n > 0 for n in made[0].edited_rows])
            # an image the edit left as it was scores exactly 0: not the last bits of another batch's padding
            scores[k] += ((torch.stack([clean[pair] for pair in part]) - ablated) * touched[:, None]).sum(0)
        scores[k] /= max(len(pairs), 1)
    return scores
