"""How to load a model, as one small settings object shared by every command and stage.

:class:`ModelOptions` holds what ``--model --model-dtype --device --device-map --revision
--trust-remote-code`` say. A field left ``None`` means "as the run record says": a later stage (grounding,
explanations, evaluation, the layer sweep) fills it from the feature store's manifest with
:meth:`ModelOptions.following`, so it reloads the model the way the features were made unless told
otherwise. :meth:`ModelOptions.record` is what a store writes into its manifest.

Examples
--------
>>> opts = ModelOptions(device="cpu")
>>> opts.following({"model_options": {"model": "llava-hf/llava-1.5-7b-hf", "model_dtype": "bfloat16",
...                                   "commit": "abc123", "device_map": None}})
ModelOptions(model='llava-hf/llava-1.5-7b-hf', model_dtype='bfloat16', device='cpu', device_map=None, revision='abc123', trust_remote_code=False, prompt_template=None)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmconcepts.devices import check_device
from mmconcepts.errors import MMConceptsError
from mmconcepts.params import Boolean, Options, param, validate

MODEL_DTYPES = ("float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto",)


@dataclass(frozen=True)
class ModelOptions:
    """Where a model comes from and how it runs.

    Parameters
    ----------
    model : str or None
        Hub id or local folder; ``None``: the run record's model, or the embedded ShapesWorld captioner.
    model_dtype : {"float32", "bfloat16", "float16"} or None
        The dtype the model runs in; ``None``: the run record's, or float32.
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    device_map : {"auto"} or None
        ``"auto"``: accelerate places a model too large for one device across the GPUs (and the CPU);
        ``None``: the whole model on ``device``, or the run record's placement.
    revision : str or None
        Hub branch, tag or commit; ``None``: the commit the run record resolved.
    trust_remote_code : bool
        Run code shipped with the checkpoint (off unless asked for).
    prompt_template : str or None
        How to prompt a model without a chat template (``"Question: {instruction} Answer:"``; ``{image}`` is
        the image placeholder); ``None``: the run record's, or the model's chat template
        (:mod:`~mmconcepts.models.prompts`).
    """

    model: str | None = param(None, help="hub id or local folder", optional=True, metavar="ID_OR_DIR",
                              shown="the embedded ShapesWorld captioner")
    model_dtype: str | None = param(None, help="dtype the model runs in", optional=True, shown="float32",
                                    constraint=Options(MODEL_DTYPES, noun="model dtype"))
    device: str = param("auto", help="auto, cpu, cuda or cuda:N", parse=check_device, metavar="DEVICE",
                        shown="auto, CUDA when available")
    device_map: str | None = param(None, help="auto: accelerate spreads a model larger than one GPU over the GPUs "
                                   "and the CPU", optional=True, shown="the whole model on --device",
                                   constraint=Options(DEVICE_MAPS, noun="device map"))
    revision: str | None = param(None, help="hub branch, tag or commit", optional=True, shown="main")
    trust_remote_code: bool = param(False, help="run code shipped with the checkpoint", constraint=Boolean())
    prompt_template: str | None = param(None, help="prompt a model without a chat template: {instruction} is the "
                                        "instruction, {image} the image placeholder, e.g. 'Question: "
                                        "{instruction} Answer:'", optional=True, metavar="TEMPLATE",
                                        shown="the model's chat template")

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "device", check_device(self.device))
        if self.prompt_template is not None:
            from mmconcepts.models.prompts import check_template

            check_template(self.prompt_template)
        if self.model is not None:
            object.__setattr__(self, "model", str(self.model))
        if self.revision is not None:
            from mmconcepts.models.loading import EMBEDDED_MODEL, shipped_revision_error

            if self.model == EMBEDDED_MODEL:  # None may still follow a store made with a hub model
                raise MMConceptsError(shipped_revision_error(self.revision))

    def following(self, manifest: dict | None) -> "ModelOptions":
        """These options with every unset field taken from a feature store's manifest (its run record)."""
        if not manifest:
            return self
        made = manifest.get("model_options") or {"model": manifest.get("model"),
                                                 "revision": manifest.get("revision")}
        from mmconcepts.models.loading import EMBEDDED_MODEL

        same_model = self.model is None or self.model == made.get("model")
        model = self.model if self.model is not None else made.get("model")
        # a revision recorded for the shipped model (by older versions, which ignored it) is not followed
        recorded = (made.get("commit") or made.get("revision")) if same_model and model not in (None, EMBEDDED_MODEL) \
            else None
        return replace(
            self,
            model=model,
            model_dtype=self.model_dtype or made.get("model_dtype"),
            device_map=self.device_map or (made.get("device_map") if same_model else None),
            revision=self.revision or recorded,
            trust_remote_code=self.trust_remote_code or bool(same_model and made.get("trust_remote_code")),
            prompt_template=self.prompt_template or (made.get("prompt_template") if same_model else None),
        )

    def load(self):
        """The :class:`~mmconcepts.models.ModelAdapter` these options describe (the whole model)."""
        from mmconcepts.models.loading import load_model

        return load_model(self.model, device=self.device, dtype=self.model_dtype or "float32",
                          device_map=self.device_map, revision=self.revision,
                          trust_remote_code=self.trust_remote_code, prompt_template=self.prompt_template)

    def load_head(self):
        """Only what decoding concepts into words needs: the unembedding, the final norm and the tokenizer
        (:func:`mmconcepts.models.head.load_head`), in ``model_dtype``."""
        from mmconcepts.models.head import load_head

        return load_head(self.model, dtype=self.model_dtype or "float32", revision=self.revision,
                         trust_remote_code=self.trust_remote_code)

    def record(self, adapter) -> dict:
        """What a run record keeps of the model a stage ran: these options and the resolved commit."""
        return {"model": adapter.model_id, "revision": self.revision, "commit": getattr(adapter, "commit", None),
                "model_dtype": str(adapter.dtype).replace("torch.", ""), "device_map": self.device_map,
                "device": str(adapter.device), "trust_remote_code": self.trust_remote_code,
                "prompt_template": getattr(adapter, "prompt_template", None)}


def as_options(model=None, **kwargs) -> ModelOptions:
    """``model`` itself if it is :class:`ModelOptions`, else ``ModelOptions(model=model, **kwargs)``."""
    if isinstance(model, ModelOptions):
        return replace(model, **kwargs) if kwargs else model
    return ModelOptions(model=model, **kwargs)
