"""SAEs written by the real packages (sae_lens, sparsify, dictionary_learning) on a random basis, with each
package's own encoder, for the import tests."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from tests.fixtures.stores import make_store as _make_store

HOOK = "blocks.3.hook_resid_post"  # layer "3" of a 4-layer store


def make_store(path, Z: torch.Tensor, **kw):
    """A complete one-layer feature store whose samples have an image and a caption (grounding reads them)."""
    return _make_store(path, Z, row=lambda i: {"id": str(i), "image": f"{i}.png", "caption": "a dog"}, **kw)


def _jitter(module, names, scale, g):
    with torch.no_grad():
        for name in names:
            p = dict(module.named_parameters()).get(name)
            if p is None:
                p = dict(module.named_buffers())[name]
            p.copy_(p + scale * torch.randn(p.shape, generator=g))


def saelens(folder: Path, arch: str, d_in: int, d_sae: int, *, k: int = 4, seed: int = 0, **cfg):
    """A SAELens SAE of ``arch`` (standard, topk, jumprelu) saved with ``save_model``; returns the SAE."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(hook_name=cfg.pop("hook_name", HOOK), model_name="toy-model", **cfg.pop("metadata", {}))
    g = torch.Generator().manual_seed(seed)
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata, **cfg))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=metadata, **cfg))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata, **cfg))
    _jitter(sae, ["b_enc", "b_dec"], 0.1, g)
    if arch == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(0.2 * torch.rand(d_sae, generator=g))
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        with torch.no_grad():
            sae.W_dec.mul_(0.5 + torch.rand(d_sae, 1, generator=g))
    sae.save_model(folder)
    return sae


def sparsify(folder: Path, d_in: int, d_sae: int, *, k: int = 4, seed: int = 0):
    """A sparsify SAE saved with ``save_to_disk`` into ``folder`` (a hookpoint folder); its dense encoder."""
    from sparsify import Sae, SaeConfig

    torch.manual_seed(seed)
    sae = Sae(d_in, SaeConfig(k=k, num_latents=d_sae))
    _jitter(sae, ["encoder.bias", "b_dec"], 0.1, torch.Generator().manual_seed(seed))
    sae.save_to_disk(folder)

    def encode(Z):
        out = sae.encode(Z)
        return torch.zeros(Z.shape[0], d_sae).scatter_(1, out.top_indices, out.top_acts)

    return encode


def dictionary_learning(folder: Path, dict_class: str, d_in: int, d_sae: int, *, k: int = 4, seed: int = 0,
                        layer: int | None = 3, submodule: str | None = "resid_post_layer_3"):
    """A dictionary_learning dictionary: ``ae.pt`` (its state_dict, torch.save) and ``config.json`` as its trainer
    writes them; returns the dictionary."""
    from dictionary_learning.dictionary import AutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = {"AutoEncoder": lambda: AutoEncoder(d_in, d_sae),
              "AutoEncoderTopK": lambda: AutoEncoderTopK(d_in, d_sae, k),
              "BatchTopKSAE": lambda: BatchTopKSAE(d_in, d_sae, k),
              "JumpReluAutoEncoder": lambda: JumpReluAutoEncoder(d_in, d_sae),
              "MatryoshkaBatchTopKSAE": lambda: MatryoshkaBatchTopKSAE(d_in, d_sae, k, [d_sae // 4,
                                                                                    d_sae - d_sae // 4])}[dict_class]()
    biases = [n for n, _ in ae.named_parameters() if "bias" in n or n in ("b_enc", "b_dec")]
    _jitter(ae, biases, 0.1, g)
    with torch.no_grad():
        if dict_class == "JumpReluAutoEncoder":
            ae.threshold.copy_(0.2 * torch.rand(d_sae, generator=g))
        elif dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
            ae.threshold.fill_(0.05)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ae.state_dict(), folder / "ae.pt")
    trainer = {"dict_class": dict_class, "trainer_class": "Trainer", "activation_dim": d_in, "dict_size": d_sae,
               "layer": layer, "lm_name": "toy-model", "submodule_name": submodule, "seed": seed}
    if dict_class != "AutoEncoder" and dict_class != "JumpReluAutoEncoder":
        trainer["k"] = k
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": d_in,
                                                                                 "io": "out"}}, indent=4))
    return ae
