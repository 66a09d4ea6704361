"""An SAE trained elsewhere, read from its files: :func:`read_foreign` finds the layout of a folder
(SAELens, sparsify, dictionary_learning) from the files in it and returns one :class:`ForeignSAE`, its
tensors in this project's orientation (``W_enc`` and ``W_dec`` both ``K x D``) and its encoder named by
the registry method that encodes the same way (:mod:`mmconcepts.decompose.sae`).

Layouts (the weights file names the layout; its config must sit beside it):

============================  ==================================  =========================================
layout                        files                               reader
============================  ==================================  =========================================
``saelens``                   ``cfg.json``, ``sae_weights.safetensors``  :mod:`~mmconcepts.exchange.saelens_layout`
``sparsify``                  ``cfg.json``, ``sae.safetensors``   :mod:`~mmconcepts.exchange.sparsify_layout`
``dictionary_learning``       ``config.json``, ``ae.pt``          :mod:`~mmconcepts.exchange.dictionary_learning_layout`
============================  ==================================  =========================================

A folder holding no SAE itself but sub-folders that do (a sparsify run: one folder per hookpoint; a
dictionary_learning run: ``trainer_0``, ...) is read through ``hookpoint``, the sub-folder's name; with one
such sub-folder it is taken, with several the error lists them.

Every problem (a missing or malformed file, a tensor of the wrong shape, an architecture or option that
cannot be encoded here) is one :class:`~mmconcepts.errors.MMConceptsError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmconcepts.errors import MMConceptsError

#: Layout -> (config file, weights file).
LAYOUTS = {"saelens": ("cfg.json", "sae_weights.safetensors"),
           "sparsify": ("cfg.json", "sae.safetensors"),
           "dictionary_learning": ("config.json", "ae.pt")}
_EXPECTED = "cfg.json + sae_weights.safetensors (SAELens), cfg.json + sae.safetensors (sparsify) or config.json " \
            "+ ae.pt (dictionary_learning)"


@dataclass(frozen=True)
class ForeignSAE:
    """An SAE read from another package's files, ready for :func:`mmconcepts.decompose.sae.from_weights`.

    Attributes
    ----------
    layout : str
        ``"saelens"``, ``"sparsify"`` or ``"dictionary_learning"``.
    architecture : str
        The architecture as its package names it (``"jumprelu"``, ``"AutoEncoderTopK"``, ...).
    method : str
        The registry method that encodes the same way (``"relu-sae"``, ``"topk-sae"``, ``"jumprelu-sae"``,
        ``"batchtopk-sae"``, ``"matryoshka-sae"``).
    W_enc, W_dec : (K, D) float32 tensors
    b_enc : (K,) float32 tensor
    b_dec : (D,) float32 tensor
    threshold : (K,) float32 tensor or None
    k : int or None
    input_centred : bool
        Whether ``b_dec`` is subtracted from the input before encoding.
    hook : str or None
        Where the package read its activations, as written (``"blocks.12.hook_resid_post"``,
        ``"layers.12"``, dictionary_learning's ``submodule_name``).
    layer : int or None
        dictionary_learning's ``layer``.
    reads_input : bool
        dictionary_learning's ``io == "in"``: the SAE read the hooked module's input, not its output.
    path : Path
        The folder read.
    weights : Path
        The weights file (its SHA-256 is recorded by ``import-sae``).
    folded : tuple of str
        What was folded into the weights on the way in (a normalisation factor, decoder norms, ...).
    params : dict
        Further parameters of the method (Matryoshka's ``group_sizes``).
    """

    layout: str
    architecture: str
    method: str
    W_enc: Any
    b_enc: Any
    W_dec: Any
    b_dec: Any
    threshold: Any = None
    k: int | None = None
    input_centred: bool = True
    hook: str | None = None
    layer: int | None = None
    reads_input: bool = False
    path: Path = Path(".")
    weights: Path = Path(".")
    folded: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    @property
    def d_in(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def d_sae(self) -> int:
        return int(self.W_dec.shape[0])

    def sha256(self) -> str:
        """SHA-256 of the weights file."""
        digest = hashlib.sha256()
        with open(self.weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def checked(sae: ForeignSAE, d_in: int | None = None, d_sae: int | None = None) -> ForeignSAE:
    """``sae`` with its tensors float32 and their shapes checked against each other and against the sizes
    its config declares (``d_in``, ``d_sae``); a one-line error naming the weights file otherwise."""
    import torch

    where = sae.weights
    K, D = (int(n) for n in sae.W_dec.shape) if sae.W_dec.ndim == 2 else (None, None)
    if K is None:
        raise MMConceptsError(f"{where}: the decoder has shape {list(sae.W_dec.shape)}, expected (d_sae, d_in); "
                              "the file is not an SAE this reader knows")
    for name, size, declared in (("d_in", D, d_in), ("d_sae", K, d_sae)):
        if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int) or declared != size):
            raise MMConceptsError(f"{where}: the config says {name}={declared} but the weights have {size}; the "
                                  "config and the weights are from different SAEs")
    expected = {"W_enc": (K, D), "b_enc": (K,), "b_dec": (D,), "threshold": (K,)}
    values = {}
    for name, shape in expected.items():
        t = getattr(sae, name)
        if t is None:
            values[name] = None
            continue
        t = torch.as_tensor(t).detach().to("cpu", torch.float32)
        if tuple(t.shape) != shape:
            raise MMConceptsError(f"{where}: {name} has shape {list(t.shape)}, expected {list(shape)} (d_sae={K}, "
                                  f"d_in={D})")
        values[name] = t.contiguous()
    W_dec = sae.W_dec.detach().to("cpu", torch.float32).contiguous()
    for name, t in (("W_dec", W_dec), *values.items()):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise MMConceptsError(f"{where}: {name} holds NaN or infinite values")
    if sae.k is not None and not 1 <= int(sae.k) <= K:
        raise MMConceptsError(f"{where}: k={sae.k} is not between 1 and d_sae={K}")
    from dataclasses import replace

    return replace(sae, W_dec=W_dec, **values)


def read_json_file(path: Path) -> dict:
    """A JSON object from ``path``; a one-line error for a missing, unreadable or malformed file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MMConceptsError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MMConceptsError(f"{path} is not a readable JSON file ({type(exc).__name__}); copy it again "
                              "from where the SAE was saved") from None
    if not isinstance(value, dict):
        raise MMConceptsError(f"{path} holds {type(value).__name__}, not a JSON object")
    return value


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file; a one-line error for a missing, truncated or foreign file."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise MMConceptsError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise MMConceptsError(f"cannot read {path} ({type(exc).__name__}: truncated or not a safetensors "
                              "file); copy it again from where the SAE was saved") from None


def need(tensors: dict, names, where: Path) -> list:
    """The tensors ``names`` of a weights file, a one-line error naming the missing ones."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise MMConceptsError(f"{where} has no {', '.join(missing)} (it holds {', '.join(sorted(tensors)) or 'nothing'}"
                              "); is it the weights file of this architecture?")
    return [tensors[n] for n in names]


def _layout_of(folder: Path) -> str | None:
    """The layout whose weights file ``folder`` holds (its config checked to be there too)."""
    for layout, (config, weights) in LAYOUTS.items():
        if (folder / weights).is_file():
            if not (folder / config).is_file():
                raise MMConceptsError(f"{folder} has {weights} but no {config} beside it ({layout} layout); copy the "
                                      "config saved with the weights")
            return layout
    return None


def find_sae_folder(source: str | os.PathLike, hookpoint: str | None = None) -> tuple[Path, str]:
    """The folder holding the SAE and its layout: ``source`` itself, or its sub-folder ``hookpoint`` (a run
    folder with one SAE per hookpoint), or its only SAE sub-folder."""
    source = Path(source)
    if source.is_file():
        source = source.parent
    if not source.is_dir():
        raise MMConceptsError(f"SAE folder not found: {source}; give the folder holding {_EXPECTED}")
    if hookpoint is not None:
        folder = source / hookpoint
        if not folder.is_dir() or Path(hookpoint).is_absolute() or ".." in Path(hookpoint).parts:
            found = _sub_saes(source)
            raise MMConceptsError(f"no hookpoint {hookpoint!r} in {source}; it holds "
                                  f"{', '.join(found) if found else 'no SAE sub-folder'}")
        layout = _layout_of(folder)
        if layout is None:
            raise MMConceptsError(f"{folder} holds no SAE: expected {_EXPECTED}")
        return folder, layout
    layout = _layout_of(source)
    if layout is not None:
        return source, layout
    found = _sub_saes(source)
    if len(found) == 1:
        return find_sae_folder(source, found[0])
    if found:
        raise MMConceptsError(f"{source} holds {len(found)} SAEs ({', '.join(found)}): choose one with "
                              "--hookpoint")
    raise MMConceptsError(f"{source} holds no SAE: expected {_EXPECTED}")


def _sub_saes(source: Path) -> list[str]:
    names = []
    for sub in sorted(p for p in source.iterdir() if p.is_dir()):
        if any((sub / weights).is_file() for _, weights in LAYOUTS.values()):
            names.append(sub.name)
    return names


def read_foreign(source: str | os.PathLike, hookpoint: str | None = None) -> ForeignSAE:
    """The SAE in ``source`` (module docstring), its layout found from its files.

    Parameters
    ----------
    source : path
        A folder in SAELens, sparsify or dictionary_learning layout, or a run folder holding such folders.
    hookpoint : str or None
        The sub-folder to read in a run folder (sparsify: the hookpoint, ``"layers.12"``).

    Returns
    -------
    ForeignSAE

    Examples
    --------
    >>> read_foreign("nowhere")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: SAE folder not found: nowhere; give the folder holding cfg.json + ...
    """
    folder, layout = find_sae_folder(source, hookpoint)
    if layout == "saelens":
        from mmconcepts.exchange.saelens_layout import read_saelens as read
    elif layout == "sparsify":
        from mmconcepts.exchange.sparsify_layout import read_sparsify as read
    else:
        from mmconcepts.exchange.dictionary_learning_layout import read_dictionary_learning as read
    return read(folder)
