"""``load_model``: a hub id or a local folder -> the family's :class:`~mmconcepts.models.base.ModelAdapter`.

The adapter is chosen by the config's ``model_type`` through :data:`ADAPTERS` (a registry, not name
matching); other image-text-to-text types fall back to :class:`~mmconcepts.models.generic.GenericAdapter`.
Nothing here forces network access: a local folder never touches the hub; a hub id goes through the normal
transformers cache (``HF_HUB_OFFLINE=1`` keeps it offline).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.devices import resolve_device
from mmconcepts.errors import MMConceptsError
from mmconcepts.models.base import ModelAdapter
from mmconcepts.models.encoder_decoder import EncoderDecoderAdapter
from mmconcepts.models.generic import GenericAdapter
from mmconcepts.models.idefics3 import Idefics3Adapter
from mmconcepts.models.llava import LlavaAdapter
from mmconcepts.models.options import DEVICE_MAPS, MODEL_DTYPES
from mmconcepts.models.qwen2_vl import Qwen2VLAdapter

#: The shipped ShapesWorld captioner, loaded by ``load_model(None)``.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapesworld-llava"
#: The name run records give the shipped captioner (not its path, which differs between installs).
EMBEDDED_MODEL = "mmconcepts:shapesworld-llava"
#: config ``model_type`` -> adapter class.
ADAPTERS: dict[str, type[ModelAdapter]] = {
    t: cls for cls in (LlavaAdapter, Qwen2VLAdapter, Idefics3Adapter) for t in cls.model_types
}
DEVICES = ("cpu", "cuda", "auto")
DTYPES = MODEL_DTYPES  # the compute dtypes a model loads in (mmconcepts.models.DTYPES)
_NOT_CACHED = "not a local folder and not in the Hugging Face cache; download it first or pass a local path"


def resolve_dtype(dtype: str | None):
    """The torch dtype named ``float32``/``bfloat16``/``float16``."""
    import torch

    name = (str(dtype) if dtype is not None else "float32").replace("torch.", "").strip().lower()
    if name not in DTYPES:
        raise MMConceptsError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def _is_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _hub_host() -> str:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _hub_unreachable() -> bool:
    """Whether the hub's host name cannot even be resolved (no network). A name lookup only: nothing is sent
    to the hub, and where it resolves the usual loading (with its retries and errors) goes on."""
    import socket

    try:
        socket.getaddrinfo(_hub_host(), 443)
    except OSError:  # socket.gaierror: no DNS, no network
        return True
    return False


def hub_options(source: str, is_local: bool, revision: str | None, trust_remote_code: bool) -> dict:
    """The keywords of every ``from_pretrained`` of one model: ``revision``, ``trust_remote_code``, and
    ``local_files_only`` for a hub id when the hub cannot be reached, so that the cache answers at once
    instead of after half a minute of retries, and what it lacks is one line (:func:`read_config`)."""
    options = {"trust_remote_code": bool(trust_remote_code), "revision": revision}
    if not is_local and not _is_offline() and _hub_unreachable():
        options["local_files_only"] = True
    return options


def _hub_error(model_id: str, exc: BaseException) -> MMConceptsError:
    """A one-line error for a hub id that could not be loaded, chosen by the types huggingface_hub raises
    (transformers wraps them in an ``OSError`` whose cause chain holds them)."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__

    def raised(*types) -> bool:
        return any(isinstance(link, types) for link in chain)

    if raised(GatedRepoError):
        return MMConceptsError(f"could not load model '{model_id}': the repository is gated; log in with "
                               "`hf auth login` and accept its terms, or pass a local path")
    if raised(RepositoryNotFoundError, HFValidationError):
        return MMConceptsError(f"could not load model '{model_id}': not a local folder and not a model on the "
                               "Hugging Face hub; check the id or pass a local path")
    if raised(RevisionNotFoundError):
        return MMConceptsError(f"could not load model '{model_id}': revision not found; check --revision")
    if _is_offline() or raised(LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError):
        return MMConceptsError(f"could not load model '{model_id}': {_NOT_CACHED}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MMConceptsError(f"could not load model '{model_id}': {first}")


def _locate(model: str | os.PathLike | None, revision: str | None = None) -> tuple[str, bool]:
    """``(source, is_local)``; checks that a local folder exists and holds a config, and refuses a
    ``revision`` of the shipped model (it has one version; the revision would be recorded and ignored)."""
    if model is None or model == EMBEDDED_MODEL:
        if revision is not None:
            raise MMConceptsError(shipped_revision_error(revision))
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise MMConceptsError(f"the shipped default model is missing at {DEFAULT_MODEL_DIR} (it is not built "
                                  "yet); pass --model with a hub id or a local model folder")
        return str(DEFAULT_MODEL_DIR), True
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MMConceptsError(f"model path '{text}' is a file; pass a model folder (with config.json) or a hub id")
        if not (path / "config.json").is_file():
            raise MMConceptsError(f"model folder '{text}' has no config.json; pass a folder written by "
                                  "save_pretrained or a hub id")
        return str(path.resolve()), True
    if isinstance(model, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise MMConceptsError(f"model folder '{text}' does not exist; pass an existing folder or a hub id "
                              "such as llava-hf/llava-1.5-7b-hf")
    return text, False


def shipped_revision_error(revision) -> str:
    """The one-line refusal of ``--revision`` with the shipped model."""
    return (f"--revision {revision} does not apply to the shipped model {EMBEDDED_MODEL} (it has a single "
            "version, in the package); drop --revision, or pass --model with a hub id")


def _choose_adapter(config, source: str) -> type[ModelAdapter]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]
    if getattr(config, "is_encoder_decoder", False):
        return EncoderDecoderAdapter
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in (
            getattr(config, "auto_map", None) or {}):
        return GenericAdapter
    arch = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
    raise MMConceptsError(
        f"unsupported architecture {arch} (model_type '{model_type}') in '{source}': supported are "
        f"{', '.join(sorted(ADAPTERS))} and other image-text-to-text models (AutoModelForImageTextToText)")


def read_config(source: str, is_local: bool, common: dict):
    """The model's config (``common``: revision and trust_remote_code), or a one-line error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError) as exc:
        if is_local:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MMConceptsError(f"could not read the config of '{source}': {first}") from None
        if common.get("local_files_only"):
            raise MMConceptsError(f"could not load model '{source}': the Hugging Face hub ({_hub_host()}) cannot be "
                                  "reached and the model is not in the local cache; pass a local folder, or "
                                  "download it where the hub can be reached (HF_HUB_OFFLINE=1 skips the hub)") \
                from None
        raise _hub_error(source, exc) from None


def load_processor(source: str, common: dict):
    """The model's processor (image processor + tokenizer), or a one-line error."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, **common)
    except (OSError, ValueError, TypeError, KeyError):
        processor = None
    if processor is None or not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise MMConceptsError(f"'{source}' has no processor (image processor + tokenizer); save one there with "
                              "processor.save_pretrained or use a complete checkpoint")
    return processor


def commit_of(source: str, config, revision: str | None = None, resolved: str | None = None) -> str | None:
    """The hub commit a model was read at (transformers 5 configs no longer keep ``_commit_hash``): from
    the path of a resolved file of the hub cache (``.../snapshots/<commit>/...``)."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return commit
    from transformers.utils import cached_file
    from transformers.utils.hub import extract_commit_hash

    if resolved is None:
        try:
            resolved = cached_file(source, "config.json", revision=revision,
                                   _raise_exceptions_for_missing_entries=False,
                                   _raise_exceptions_for_connection_errors=False)
        except OSError:
            return None
    return extract_commit_hash(resolved, None) if resolved else None


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def model_name(source: str) -> str:
    """The id a run record keeps for a located model: :data:`EMBEDDED_MODEL` for the shipped captioner."""
    return EMBEDDED_MODEL if Path(source) == DEFAULT_MODEL_DIR else source


def load_model(model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "float32",
               trust_remote_code: bool = False, revision: str | None = None, device_map: str | None = None,
               adapter: type[ModelAdapter] | None = None, prompt_template: str | None = None) -> ModelAdapter:
    """Load a vision-language model and its processor behind the family's adapter.

    Parameters
    ----------
    model : str, path or None
        A hub id (``llava-hf/llava-1.5-7b-hf``) or a local folder written by ``save_pretrained``;
        ``None`` (or :data:`EMBEDDED_MODEL`) loads the shipped ShapesWorld captioner (:data:`DEFAULT_MODEL_DIR`).
    device : {"auto", "cpu", "cuda"}
        ``auto`` picks CUDA when available; ``cuda:N`` is accepted too.
    device_map : {"auto"} or None
        ``"auto"``: accelerate spreads a model too large for one GPU over the GPUs and the CPU (``device`` is
        then ignored); ``None``: the whole model on ``device``.
    dtype : {"float32", "bfloat16", "float16"}
    trust_remote_code : bool
        Run code shipped with the checkpoint (off unless asked for).
    revision : str, optional
        Hub branch, tag or commit.
    prompt_template : str, optional
        Prompt with this template instead of the chat template (:mod:`~mmconcepts.models.prompts`).
    adapter : type, optional
        Force an adapter class (e.g. :class:`GenericAdapter`) instead of the registry's choice.

    Returns
    -------
    ModelAdapter
        In eval mode, on ``device``, in ``dtype``.

    Raises
    ------
    MMConceptsError
        Unknown id or folder, folder without a processor, unsupported architecture, bad device/dtype.
    """
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise MMConceptsError(f"unknown device map {device_map!r}: choose auto (or leave it out)")
    source, is_local = _locate(model, revision)
    from transformers import AutoModelForImageTextToText

    common = hub_options(source, is_local, revision, trust_remote_code)
    config = read_config(source, is_local, common)
    adapter_cls = adapter or _choose_adapter(config, source)
    processor = load_processor(source, common)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' per-tensor "Loading weights" bar; mmconcepts shows its own
    placement = {"device_map": device_map} if device_map else {}
    try:
        net = AutoModelForImageTextToText.from_pretrained(source, config=config, **common, **placement,
                                                          **{_dtype_kwarg(): torch_dtype})
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MMConceptsError(f"could not load the weights of '{source}': {first}") from None
    except ImportError as exc:  # a family whose modules need another package (Gemma 3n's vision tower: timm)
        import re

        named = re.findall(r"requires the (\S+) library", str(exc)) or [getattr(exc, "name", None) or "a package"]
        raise MMConceptsError(f"'{source}' ({getattr(config, 'model_type', '?')}) needs the {named[0]} package: "
                              f"pip install {named[0]}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not device_map:
        net.to(device)
    net.eval()
    result = adapter_cls(net, processor, model_id=model_name(source))
    if prompt_template is not None:
        from mmconcepts.models.prompts import check_template

        result.prompt_template = check_template(prompt_template)
    result.commit = None if is_local else commit_of(source, config, revision)  # the revision as resolved
    return result


def as_adapter(model, **kwargs) -> ModelAdapter:
    """``model`` itself when it is already a loaded :class:`ModelAdapter`, the model that
    :class:`~mmconcepts.models.options.ModelOptions` describe, else :func:`load_model` of it."""
    from mmconcepts.models.options import ModelOptions

    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, ModelOptions):
        return model.load()
    return load_model(model, **kwargs)
