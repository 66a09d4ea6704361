"""``load_head``: only what grounding in words needs -- the unembedding, the final norm and the tokenizer.

Grounding (:mod:`mmconcepts.concepts.decoding`) reads concepts through ``adapter.lm_head()`` and
``adapter.final_norm()``; for LLaVA-1.5-7B in float32 the whole model is 28 GB, the unembedding and norm
0.5 GB (its checkpoint is float16: read in float32 every weight is converted and held in memory; see
``benchmarks/grounding_memory.py``). :func:`load_head` builds the model's module tree on the ``meta`` device (no memory) and reads just
those tensors from the checkpoint's safetensors files, so every handle of the adapter (layer names, sizes,
the tokenizer) works while the decoder layers and the vision tower stay empty.

Checkpoint keys are matched to the module's parameter names exactly, else by their longest dotted suffix
(two components at least) that a single key ends with: older checkpoints keep older names
(``language_model.model.norm.weight`` for ``model.language_model.norm.weight``). Whatever cannot be read
that way falls back to the full :func:`~mmconcepts.models.loading.load_model`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import safe_open

from mmconcepts.models.base import ModelAdapter
from mmconcepts.models.loading import (_choose_adapter, _hub_error, _locate, commit_of, hub_options, load_model,
                                      load_processor, model_name, read_config, resolve_dtype)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class _Fallback(Exception):
    """The head cannot be read on its own; load the whole model instead."""


def load_head(model: str | os.PathLike | None = None, *, dtype: str = "float32", revision: str | None = None,
              trust_remote_code: bool = False) -> ModelAdapter:
    """Load a model's processor, unembedding and final norm only, behind the family's adapter.

    The adapter is the one :func:`~mmconcepts.models.loading.load_model` would choose, but its ``model``
    is built from the config with :func:`accelerate.init_empty_weights`: every parameter is on the
    ``meta`` device except those of ``adapter.lm_head()`` and ``adapter.final_norm()``, which are read
    tensor by tensor from the checkpoint's safetensors files (of a sharded checkpoint, only the shards
    that hold them; for a hub id, only those files are fetched) and placed on the CPU in ``dtype``.
    With tied word embeddings and no ``lm_head`` weight in the checkpoint, the input embeddings are read
    and shared with the unembedding.

    Parameters
    ----------
    model : str, path or None
        A hub id or a local folder written by ``save_pretrained``; ``None`` is the shipped ShapesWorld
        captioner (:data:`~mmconcepts.models.loading.DEFAULT_MODEL_DIR`).
    dtype : {"float32", "bfloat16", "float16"}
        Dtype of the unembedding and norm.
    revision : str, optional
        Hub branch, tag or commit.
    trust_remote_code : bool
        Run code shipped with the checkpoint (off unless asked for).

    Returns
    -------
    ModelAdapter
        In eval mode, with ``head_only = True``. It serves decoding: ``lm_head()``, ``final_norm()``,
        ``tokenizer``, ``resolve_layer``, ``num_layers``, ``hidden_size``, ``vocab_size``,
        ``model_id``; it cannot run the model (its ``device`` and ``dtype`` properties read a ``meta``
        parameter).

        When the head cannot be read on its own -- the checkpoint has no safetensors files, a needed
        tensor matches no checkpoint key or several, or its shape differs, the model cannot be built
        empty, or accelerate is not installed -- the full model is loaded instead with ``load_model(model, device="cpu", dtype=dtype,
        revision=revision, trust_remote_code=trust_remote_code)`` and returned, with ``head_only = False``.

    Raises
    ------
    MMConceptsError
        Unknown id or folder, folder without a processor, unsupported architecture, bad dtype (the errors
        of :func:`~mmconcepts.models.loading.load_model`).
    """
    torch_dtype = resolve_dtype(dtype)
    source, is_local = _locate(model, revision)
    common = hub_options(source, is_local, revision, trust_remote_code)
    config = read_config(source, is_local, common)
    adapter_cls = _choose_adapter(config, source)
    processor = load_processor(source, common)
    try:
        return _head_adapter(source, is_local, config, processor, adapter_cls, torch_dtype, common)
    except _Fallback:
        adapter = load_model(model, device="cpu", dtype=dtype, revision=revision,
                             trust_remote_code=trust_remote_code)
        adapter.head_only = False
        return adapter


# ---- the checkpoint's files ----------------------------------------------------------------------------------
def _resolver(source: str, is_local: bool, common: dict):
    """A function ``filename -> local path or None`` for the checkpoint's files (hub files fetched on demand)."""
    if is_local:
        def local(filename: str):
            path = Path(source) / filename
            return str(path) if path.is_file() else None
        return local
    from transformers.utils import cached_file

    def hub(filename: str):
        try:  # missing or not reachable -> None (then the full loader gives its own error, if any)
            return cached_file(source, filename, revision=common["revision"],
                               local_files_only=common.get("local_files_only", False),
                               _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except OSError as exc:  # unknown repository or revision, gated: one-line error
            raise _hub_error(source, exc) from None
    return hub


def _checkpoint_keys(resolve) -> tuple[dict[str, str], str]:
    """``(checkpoint key -> file name, resolved path of the file read)``: the single file's header, else the
    shard index's weight map.

    The single file is looked up first, as ``from_pretrained`` does (so a hub cache that holds it answers
    offline); a checkpoint with neither (``.bin`` and other formats) is left to the full loader.
    """
    single = resolve(SINGLE_FILE)
    if single is not None:
        with safe_open(single, framework="pt", device="cpu") as handle:
            return {key: SINGLE_FILE for key in handle.keys()}, single
    index = resolve(INDEX_FILE)
    if index is None:
        raise _Fallback
    with open(index, encoding="utf-8") as handle:
        weight_map = json.load(handle).get("weight_map") or {}
    if not weight_map:
        raise _Fallback
    return dict(weight_map), index


def match_key(name: str, keys) -> str | None:
    """The checkpoint key holding parameter ``name``: the name itself, else the longest dotted suffix of it
    (two components at least) that exactly one key ends with; ``None`` when none does or several do."""
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    if name in keys:
        return name
    parts = name.split(".")
    for start in range(len(parts) - 1):
        suffix = ".".join(parts[start:])
        hits = [k for k in keys if k == suffix or k.endswith("." + suffix)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            return None  # ambiguous: shorter suffixes match even more keys
    return None


# ---- the empty model with a real head ------------------------------------------------------------------------
def _tensors_of(module, prefix: str):
    """``[(full name, tensor, is_parameter)]``: the parameters and persistent buffers of ``module``
    (non-persistent buffers are not in checkpoints; ``init_empty_weights`` leaves them materialised)."""
    out = [(f"{prefix}.{n}" if prefix else n, p, True) for n, p in module.named_parameters()]
    for sub_name, sub in module.named_modules():
        for n, b in sub.named_buffers(recurse=False):
            if b is None or n in getattr(sub, "_non_persistent_buffers_set", set()):
                if b is not None and b.is_meta:
                    raise _Fallback  # a non-persistent buffer left empty cannot be read from the checkpoint
                continue
            full = ".".join(x for x in (prefix, sub_name, n) if x)
            out.append((full, b, False))
    return out


def _ties_embeddings(config) -> bool:
    texts = [config]
    if hasattr(config, "get_text_config"):
        texts.append(config.get_text_config(decoder=True))
    return any(bool(getattr(c, "tie_word_embeddings", False)) for c in texts)


def _head_adapter(source, is_local, config, processor, adapter_cls, torch_dtype, common) -> ModelAdapter:
    try:
        from accelerate import init_empty_weights
        from accelerate.utils import set_module_tensor_to_device
    except ImportError:  # pragma: no cover -- accelerate not installed: the full loader needs no empty model
        raise _Fallback from None
    from transformers import AutoModelForImageTextToText

    resolve = _resolver(source, is_local, common)
    key_files, resolved = _checkpoint_keys(resolve)
    try:
        with init_empty_weights():
            net = AutoModelForImageTextToText.from_config(config, trust_remote_code=common["trust_remote_code"],
                                                          dtype=torch_dtype)
    except Exception:  # noqa: BLE001 -- a model that cannot be built empty is loaded whole
        raise _Fallback from None
    adapter = adapter_cls(net, processor, model_id=model_name(source))
    head, norm = adapter.lm_head(), adapter.final_norm()
    head_path, norm_path = adapter._module_path(head), adapter._module_path(norm)
    embeddings = net.get_input_embeddings()

    plan = []  # (module-tensor name, checkpoint key, target tensor)
    tie_to = None
    for path, module in ((head_path, head), (norm_path, norm)):
        for name, tensor, is_param in _tensors_of(module, path):
            key = match_key(name, key_files)
            if key is None and module is head and getattr(module, "weight", None) is tensor \
                    and embeddings is not None and _ties_embeddings(config):
                emb_name = f"{adapter._module_path(embeddings)}.weight"
                key = match_key(emb_name, key_files)
                tie_to = embeddings if key is not None else None
            if key is None:
                if is_param or tensor.is_meta:
                    raise _Fallback
                continue  # a persistent buffer the checkpoint lacks keeps its initial value, as from_pretrained
            plan.append((name, key, tensor))

    by_file: dict[str, list] = {}
    for item in plan:
        by_file.setdefault(key_files[item[1]], []).append(item)
    for filename, items in by_file.items():
        path = resolve(filename)
        if path is None:
            raise _Fallback
        with safe_open(path, framework="pt", device="cpu") as handle:
            for name, key, tensor in items:
                if tuple(handle.get_slice(key).get_shape()) != tuple(tensor.shape):
                    raise _Fallback
                value = handle.get_tensor(key)
                cast = torch_dtype if value.is_floating_point() else None
                set_module_tensor_to_device(net, name, "cpu", value=value, dtype=cast)
                del value
    if tie_to is not None:
        tie_to.weight = head.weight  # the same tensor: tied, as in the full model
    if any(t.is_meta for m in (head, norm) for t in list(m.parameters()) + list(m.buffers())):
        raise _Fallback
    net.eval()
    adapter.head_only = True
    adapter.commit = None if is_local else commit_of(source, config, common["revision"], resolved)
    return adapter
