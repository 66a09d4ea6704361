"""A concepts folder written in SAELens' layout: ``cfg.json`` + ``sae_weights.safetensors``, the files
``sae_lens.SAE.load_from_disk(path)`` loads (SAELens >= 6), and a ``README.md`` saying how it encodes.

SAELens' encoders (``sae_lens/saes/``) compute ``pre = (x - apply_b_dec_to_input * b_dec) @ W_enc + b_enc``
(``W_enc`` is ``D x K``) and then: ``standard`` ``relu(pre)``; ``topk`` the ``k`` largest of ``pre`` kept,
ReLU'd; ``jumprelu`` ``relu(pre) * (pre > threshold)``. Its decoder is ``acts @ W_dec + b_dec``. Our
methods map onto them (:data:`SAE_ARCHITECTURES`):

- ``relu-sae`` -> ``standard``; ``topk-sae`` -> ``topk`` (its ``k``); ``jumprelu-sae`` -> ``jumprelu``;
  ``batchtopk-sae`` and ``matryoshka-sae`` -> ``jumprelu`` with their inference threshold (a scalar threshold
  copied to every latent): ``relu(pre) * (relu(pre) > t)`` equals ``relu(pre) * (pre > t)`` for any ``t``.
  ``input_centred_`` is ``apply_b_dec_to_input``. These exports encode exactly as we do.
- ``pca`` (signed) -> ``standard`` with ``2K`` latents ``[U; -U]``, ``b_dec`` the mean and
  ``apply_b_dec_to_input``: latent ``k`` is ``max(v_k, 0)``, latent ``K + k`` is ``max(-v_k, 0)``, exactly the
  one-sided concepts of :class:`~mmconcepts.concepts.ConceptSet`, and the decoder gives PCA's reconstruction.
- Every other method (``semi-nmf``, ``nmf``, ``kmeans``, ``simple``, ``reference-dl``, a class of one's own)
  has no linear encoder: its activations come from a solver (non-negative least squares, distances). It is
  exported as ``standard`` with the decoder ``U`` (``components_``, no bias) and the encoder
  ``relu(x @ pinv(U))``, the unconstrained least-squares code clipped at zero: what is lost is the
  non-negativity constraint inside the solve, the L1 term and (K-Means, Simple) the distance activations.

Every export measures, over the feature store the folder was learnt from, how far SAELens' encoding (re-computed
here by :meth:`SAELensWeights.encode`, the formulas above) is from ours (:class:`ExportFidelity`) and records it
in ``cfg.json`` under ``metadata.mmconcepts`` and in ``README.md``.

Hook names: our layer ``"i"`` (the output of decoder layer ``i``, the residual stream after block ``i``) is
TransformerLens' ``blocks.i.hook_resid_post``; ``"norm"`` (the final norm's output) is
``ln_final.hook_normalized`` (:func:`hook_name`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import FORMAT_VERSION, atomic_write_bytes, atomic_write_text

__all__ = ["SAELENS_FORMAT", "SAE_ARCHITECTURES", "ExportFidelity", "SAELensWeights", "hook_name", "layer_of_hook",
           "measure_fidelity", "saelens_weights", "write_saelens"]

#: The SAELens version whose on-disk format the files follow (``metadata.sae_lens_version``; SAELens reads a
#: config without one as a pre-6.0 config).
SAELENS_FORMAT = "6.0.0"
#: Our SAE methods and the SAELens architecture that encodes as they do.
SAE_ARCHITECTURES = {"relu-sae": "standard", "topk-sae": "topk", "jumprelu-sae": "jumprelu",
                     "batchtopk-sae": "jumprelu", "matryoshka-sae": "jumprelu"}
#: Methods whose activations are a linear map of the features (signed): exported exactly.
LINEAR_METHODS = ("pca",)
#: Features encoded at a time when measuring an export's encoding.
CHUNK = 1024
#: TransformerLens' hook of the final norm's output (our layer ``"norm"``).
NORM_HOOK = "ln_final.hook_normalized"
_RESID_POST = "hook_resid_post"


def hook_name(layer: str) -> str:
    """The TransformerLens hook name of one of our layers (``"3"`` or ``"norm"``).

    Examples
    --------
    >>> hook_name("3"), hook_name("norm")
    ('blocks.3.hook_resid_post', 'ln_final.hook_normalized')
    """
    layer = str(layer)
    if layer == "norm":
        return NORM_HOOK
    if not layer.isdigit():
        raise MMConceptsError(f"layer {layer!r} has no TransformerLens hook name: only a decoder layer's index "
                              "or norm does")
    return f"blocks.{layer}.{_RESID_POST}"


def layer_of_hook(name: str) -> str | None:
    """Our layer of a TransformerLens hook name that :func:`hook_name` writes, else ``None``.

    Examples
    --------
    >>> layer_of_hook("blocks.12.hook_resid_post"), layer_of_hook("ln_final.hook_normalized")
    ('12', 'norm')
    >>> layer_of_hook("blocks.12.hook_mlp_out") is None
    True
    """
    if name == NORM_HOOK:
        return "norm"
    parts = str(name).split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] == _RESID_POST:
        return parts[1]
    return None


@dataclass(frozen=True)
class ExportFidelity:
    """How SAELens' encoding of an export compares with ours, over the features the folder was learnt from.

    Attributes
    ----------
    n_samples : features compared.
    relative_difference : ``||A_saelens - A_ours||_F / ||A_ours||_F``.
    max_abs_difference : the largest ``|A_saelens - A_ours|`` entry.
    top1_agreement : share of samples whose most active concept is the same (among samples active in ours).
    """

    n_samples: int
    relative_difference: float
    max_abs_difference: float
    top1_agreement: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SAELensWeights:
    """The tensors and settings of one SAELens SAE (in SAELens' shapes) and how they encode.

    Attributes
    ----------
    architecture : ``"standard"``, ``"topk"`` or ``"jumprelu"``.
    W_enc, b_enc, W_dec, b_dec : ``(D, L)``, ``(L,)``, ``(L, D)``, ``(D,)`` float32 tensors (``L`` latents).
    threshold : ``(L,)`` (``jumprelu``) or ``None``.
    k : active latents (``topk``) or ``None``.
    apply_b_dec_to_input : subtract ``b_dec`` from the input before encoding.
    exact : the encoding is ours (up to float rounding); else it approximates ours.
    encoding : one paragraph on how it encodes and what is lost.
    """

    architecture: str
    W_enc: object
    b_enc: object
    W_dec: object
    b_dec: object
    threshold: object
    k: int | None
    apply_b_dec_to_input: bool
    exact: bool
    encoding: str

    @property
    def n_latents(self) -> int:
        return int(self.W_dec.shape[0])

    def tensors(self) -> dict:
        """The state dict SAELens loads (``load_state_dict`` is strict: exactly these names)."""
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return {name: t.detach().float().cpu().contiguous() for name, t in out.items()}

    def encode(self, x):
        """SAELens' encoding of ``x`` (``N x D``), as its ``encode`` computes it."""
        import torch

        pre = (x - self.b_dec * float(self.apply_b_dec_to_input)) @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            top = torch.topk(pre, min(int(self.k), pre.shape[1]), dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        if self.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        return pre.relu()


def _active(dictionary) -> int:
    """The ``k`` a top-k SAE keeps (its ``k``, else its default)."""
    k = getattr(dictionary, "k", None)
    return int(k) if k is not None else int(dictionary._k)


def _sae(dictionary, method: str):
    """An SAE's tensors as SAELens holds them."""
    import torch

    K = int(dictionary.components_.shape[0])
    architecture = SAE_ARCHITECTURES[method]
    threshold = None
    if architecture == "jumprelu":
        raw = getattr(dictionary, "threshold_", None)
        if raw is None:
            raise MMConceptsError(f"the {method} dictionary has no inference threshold (threshold_); learn it "
                                  "again with this mmconcepts")
        t = torch.as_tensor(raw, dtype=torch.float32).reshape(-1)
        threshold = t.expand(K).clone() if t.numel() == 1 else t.reshape(K)  # a scalar: per-latent copies
    k = min(_active(dictionary), K) if architecture == "topk" else None
    centred = bool(getattr(dictionary, "input_centred_", True))
    how = {"standard": "relu(pre)", "topk": f"the {k} largest of pre kept, ReLU'd",
           "jumprelu": "relu(pre) * (pre > threshold)"}[architecture]
    note = (f"{method} exported as SAELens' {architecture} SAE: pre = (x{' - b_dec' if centred else ''}) @ W_enc "
            f"+ b_enc, activations {how}, decoder acts @ W_dec + b_dec; the same encoding as mmconcepts'.")
    return SAELensWeights(architecture, dictionary.encoder_weight_.detach().float().t(),
                          dictionary.encoder_bias_.detach().float(), dictionary.components_.detach().float(),
                          dictionary.decoder_bias_.detach().float(), threshold, k, centred, True, note)


def _linear(concepts, method: str) -> SAELensWeights:
    """A dictionary without a linear encoder (or PCA's, which is one): decoder ``U``, encoder a linear map."""
    import torch

    dictionary = concepts.dictionary
    U = dictionary.components_.detach().float()
    exact = method in LINEAR_METHODS
    if exact:  # PCA: v = (x - mean) U^T
        P, b_dec, centred = U.t(), dictionary.mean_.detach().float(), True
        note = (f"{method} exported as SAELens' standard SAE: W_enc = U^T, b_dec = the mean (subtracted from the "
                "input), activations relu(pre): exact.")
    else:
        P, b_dec, centred = torch.linalg.pinv(U.double()).float(), torch.zeros(U.shape[1]), False
        note = (f"{method} has no linear encoder (its activations come from a solver); exported as SAELens' "
                "standard SAE with W_dec = U (its concepts, no bias) and W_enc = pinv(U), so activations are "
                "relu(x @ pinv(U)): the least-squares code clipped at zero. Lost: the non-negativity constraint "
                "and any L1 term inside the solve (and the distance activations of kmeans and simple); the "
                "measured difference below says how much that changes the activations.")
    if concepts.signed:
        P, U = torch.cat([P, -P], dim=1), torch.cat([U, -U], dim=0)
        note += (f" Signed activations: {U.shape[0]} latents [U; -U], latent k the positive side of component k, "
                 f"latent K + k its negative side (mmconcepts' one-sided concepts).")
    return SAELensWeights("standard", P, torch.zeros(U.shape[0]), U, b_dec, None, None, centred, exact, note)


def saelens_weights(concepts) -> SAELensWeights:
    """The SAELens SAE of a :class:`~mmconcepts.concepts.ConceptSet` (see the module's docstring)."""
    method = str(concepts.summary.get("method"))
    if method in SAE_ARCHITECTURES:
        return _sae(concepts.dictionary, method)
    return _linear(concepts, method)


def measure_fidelity(concepts, weights: SAELensWeights) -> ExportFidelity:
    """SAELens' encoding against ours over the folder's feature store (read shard by shard)."""
    import torch

    from mmconcepts.extract.features import iter_feature_shards

    store = concepts.features
    if not (store / "manifest.json").is_file():
        raise MMConceptsError(f"the feature store of {concepts.path} is not at {store}; the export measures its "
                              "encoding on it: put the store back (or learn again)")
    n, diff2, norm2, worst, agree, active = 0, 0.0, 0.0, 0.0, 0, 0
    with torch.no_grad():
        for shard in iter_feature_shards(store, concepts.summary["layer"], concepts.token):
            for Z in shard.split(CHUNK):  # bounded memory for a wide SAE: CHUNK x L activations at a time
                ours, theirs = concepts.encode(Z).float(), weights.encode(Z.float())
                d = (theirs - ours).double()
                n += Z.shape[0]
                diff2 += float(d.square().sum())
                norm2 += float(ours.double().square().sum())
                worst = max(worst, float(d.abs().max())) if d.numel() else worst
                on = ours.amax(1) > 0
                active += int(on.sum())
                agree += int((ours.argmax(1) == theirs.argmax(1))[on].sum())
    return ExportFidelity(n, diff2 ** 0.5 / max(norm2 ** 0.5, 1e-30), worst, agree / max(active, 1))


def _cfg(concepts, weights: SAELensWeights, fidelity: ExportFidelity) -> dict:
    summary = concepts.summary
    cfg = {"architecture": weights.architecture, "d_in": int(weights.W_dec.shape[1]), "d_sae": weights.n_latents,
           "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": weights.apply_b_dec_to_input,
           "normalize_activations": "none", "reshape_activations": "none"}
    if weights.architecture == "topk":
        cfg.update(k=int(weights.k), rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT, "model_name": summary.get("model"),
        "hook_name": hook_name(summary["layer"]), "hook_head_index": None,
        "mmconcepts": {"format_version": FORMAT_VERSION, "method": summary.get("method"),
                       "layer": summary["layer"], "token": summary.get("token"),
                       "n_concepts": int(summary["n_concepts"]), "signed": concepts.signed,
                       "exact": weights.exact, "encoding": weights.encoding, "fidelity": fidelity.to_json()}}
    return cfg


def _readme(concepts, weights: SAELensWeights, fidelity: ExportFidelity) -> str:
    s = concepts.summary
    return "\n".join([
        f"# {s.get('method')} concepts of '{s.get('token')}' in SAELens' layout", "",
        f"Exported by `mmconcepts export --format saelens` from `{concepts.path}` (model `{s.get('model')}`, "
        f"layer `{s['layer']}` = hook `{hook_name(s['layer'])}`).", "",
        "```python", "from sae_lens import SAE", "sae = SAE.load_from_disk(\"<this folder>\")",
        "acts = sae.encode(features)  # features: N x d_in, the layer's hidden states at the token", "```", "",
        "## How it encodes", "", weights.encoding, "",
        f"Measured on the {fidelity.n_samples} training features of the concepts folder: relative difference "
        f"{fidelity.relative_difference:.3g} (Frobenius, SAELens' activations against mmconcepts'), largest "
        f"entry difference {fidelity.max_abs_difference:.3g}, same top concept for "
        f"{100 * fidelity.top1_agreement:.1f}% of the samples.", ""])


def write_saelens(concepts, folder) -> ExportFidelity:
    """Write ``cfg.json``, ``sae_weights.safetensors`` and ``README.md`` of ``concepts`` into ``folder``.

    Returns
    -------
    ExportFidelity
        SAELens' encoding against ours, as the files record it.
    """
    from safetensors.torch import save

    folder = Path(folder)
    weights = saelens_weights(concepts)
    fidelity = measure_fidelity(concepts, weights)
    atomic_write_bytes(folder / "sae_weights.safetensors", save(weights.tensors()))
    atomic_write_text(folder / "cfg.json", json.dumps(_cfg(concepts, weights, fidelity), indent=1))
    atomic_write_text(folder / "README.md", _readme(concepts, weights, fidelity))
    return fidelity
