"""Where an SAE read its activations, as this project names layers: decoder layer ``L``'s output is ``"L"``, the
final norm's ``"norm"`` (docs/ARCHITECTURE.md, layer names).

Hook names are parsed whole (each pattern must match the entire name):

- TransformerLens / SAELens: ``blocks.L.hook_resid_post`` -> ``L``; ``blocks.L.hook_resid_pre`` -> ``L - 1``
  (the input of block 0 is the embeddings: not a stored layer); ``ln_final.hook_normalized`` -> ``norm``;
- module paths (sparsify hookpoints, nnsight submodules): ``layers.L``, ``model.layers.L``,
  ``language_model.model.layers.L``, ``transformer.h.L`` -> ``L``; ``model.norm``, ``norm`` -> ``norm``;
- dictionary_learning: ``trainer.layer = L`` with a residual ``submodule_name`` (absent, ``resid_post_layer_L``
  or a module path as above) -> ``L``, or ``L - 1`` when the buffer read the module's input (``io = "in"``).

Anything else (an MLP or attention output, a head's ``hook_z``) is not a stored layer's state: ``None``, and
``import-sae`` asks for ``--layer``.

Examples
--------
>>> [hook_layer(h) for h in ("blocks.3.hook_resid_post", "blocks.3.hook_resid_pre", "model.layers.12",
...                          "layers.2", "model.norm", "blocks.3.hook_mlp_out")]
['3', '2', '12', '2', 'norm', None]
"""

from __future__ import annotations

import re

_RESID_POST = re.compile(r"blocks\.(\d+)\.hook_resid_post")
_RESID_PRE = re.compile(r"blocks\.(\d+)\.hook_resid_pre")
_MODULE = re.compile(r"(?:[A-Za-z_]\w*\.)*(?:layers|h)\.(\d+)")
_NORM = re.compile(r"(?:[A-Za-z_]\w*\.)*(?:norm|ln_f|final_layernorm)|ln_final\.hook_normalized")
_DL_RESID = re.compile(r"resid(?:ual)?(?:_post)?_layer_?(\d+)")


def hook_layer(hook: str | None, reads_input: bool = False) -> str | None:
    """This project's layer name for a hook name (module docstring), ``None`` when it names no stored layer.
    ``reads_input``: the activations are the hooked module's input (the previous layer's output)."""
    if not hook:
        return None
    hook = hook.strip()
    for pattern, shift in ((_RESID_POST, 0), (_RESID_PRE, 1), (_MODULE, 0), (_DL_RESID, 0)):
        m = pattern.fullmatch(hook)
        if m:
            return _shifted(int(m.group(1)), shift + int(reads_input))
    if _NORM.fullmatch(hook) and not reads_input:
        return "norm"
    return None


def _shifted(layer: int, back: int) -> str | None:
    return str(layer - back) if layer - back >= 0 else None


def foreign_layer(sae) -> str | None:
    """The layer a :class:`~mmconcepts.exchange.foreign.ForeignSAE` read, or ``None`` when it cannot be said."""
    if sae.layout == "dictionary_learning" and sae.layer is not None:
        if sae.hook is None:
            return _shifted(sae.layer, int(sae.reads_input))
        named = hook_layer(sae.hook, sae.reads_input)
        return named if named == _shifted(sae.layer, int(sae.reads_input)) else None
    return hook_layer(sae.hook, sae.reads_input)
