"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import re

from mmconcepts.models.options import DEVICE_MAPS, MODEL_DTYPES

#: Options whose value may start with "-" (a negative layer index): ``--layers -1,norm`` is read as written.
LAYER_OPTIONS = ("--layers", "--layer")
_NEGATIVE_LAYERS = re.compile(r"^-\d[\w\s,-]*$")


def add_model_args(parser: argparse.ArgumentParser, follows_store: bool = False) -> None:
    """The model options of every command that loads a model, with the same names and meaning everywhere.

    ``follows_store``: the command works on a feature store, and every option left out is taken from the
    store's run record (the model, its commit, dtype and placement it was extracted with).
    """
    record = "the feature store's" if follows_store else None
    g = parser.add_argument_group("model", "how the model is loaded" + (
        "; each option left out is taken from the feature store's run record" if follows_store else ""))
    g.add_argument("--model", default=None, metavar="ID_OR_DIR",
                   help=f"hub id or local folder (default: {record or 'the embedded ShapesWorld captioner'})")
    g.add_argument("--model-dtype", default=None, choices=MODEL_DTYPES,
                   help=f"dtype the model runs in (default: {record or 'float32'})")
    g.add_argument("--device", default="auto", type=device_arg, metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N (default: auto, CUDA when available)")
    g.add_argument("--device-map", default=None, choices=DEVICE_MAPS,
                   help="auto: accelerate spreads a model larger than one GPU over the GPUs and the CPU "
                        f"(default: {record or 'the whole model on --device'})")
    g.add_argument("--revision", default=None,
                   help=f"hub branch, tag or commit (default: {'the commit the store was made with' if record else 'main'})")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint (off unless asked for)")
    template = "the store's" if record else "the model's chat template"
    g.add_argument("--prompt-template", default=None, metavar="TEMPLATE",
                   help="prompt a model without a chat template: {instruction} is the instruction, {image} the "
                        f"image placeholder, e.g. 'Question: {{instruction}} Answer:' (default: {template})")


def model_options(args: argparse.Namespace):
    """The :class:`~mmconcepts.models.options.ModelOptions` of a command's model arguments."""
    from mmconcepts.models.options import ModelOptions

    return ModelOptions(model=args.model, model_dtype=args.model_dtype, device=args.device,
                        device_map=args.device_map, revision=args.revision,
                        trust_remote_code=args.trust_remote_code,
                        prompt_template=getattr(args, "prompt_template", None))


def device_arg(text: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda, cuda:N (availability is checked when loading)."""
    from mmconcepts.devices import check_device
    from mmconcepts.errors import MMConceptsError

    try:
        return check_device(text)
    except MMConceptsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count where zero means nothing (``--limit``, ``--batch-size``, ``-k``): an integer >= 1."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type of a count or seed that may be zero (``--seed``, ``--num-workers``): an integer >= 0."""
    return _integer(text, 0)


def _real(text: str, low: float, high: float | None = None) -> float:
    what = f"a number in [{low:g}, {high:g}]" if high is not None else f"a number >= {low:g}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type of a weight, rate or tolerance (``--l1``, ``--tol``, ``--lr``): a finite number >= 0."""
    return _real(text, 0.0)


def fraction(text: str) -> float:
    """argparse type of a share (``--min-ratio``): a number in [0, 1]."""
    return _real(text, 0.0, 1.0)


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required,
                        help="folder with captions.jsonl/captions.csv, a Karpathy-style dataset_coco.json, or a "
                             "Hugging Face dataset folder written by save_to_disk (needs `pip install datasets`)")
    parser.add_argument("--image-root", default=None,
                        help="folder holding the images of a Karpathy JSON (or the path-string images of a "
                             "Hugging Face dataset)")
    parser.add_argument("--split", default=None,
                        help="keep only this split (train, val, test, ...); for a saved DatasetDict, the split "
                             "to read")
    parser.add_argument("--limit", type=positive_int, default=None, help="use at most this many images")
    parser.add_argument("--image-column", default=None,
                        help="Hugging Face datasets: the column holding the images, embedded or as file paths "
                             "(default: image)")
    parser.add_argument("--caption-column", default=None,
                        help="Hugging Face datasets: the column holding the captions, a string or a list "
                             "(default: the first of caption, captions, sentences, text)")


def join_layer_values(argv: list[str]) -> list[str]:
    """``["--layers", "-1,norm"]`` -> ``["--layers=-1,norm"]``, so that argparse does not read a negative layer
    index as an option (it only does so for plain negative numbers, not for ``-1,norm``)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in LAYER_OPTIONS and i + 1 < len(argv) and _NEGATIVE_LAYERS.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def layer_list(text: str) -> list[str]:
    """``"-1,norm"`` -> ``["-1", "norm"]``."""
    layers = [part.strip() for part in text.split(",") if part.strip()]
    if not layers:
        raise argparse.ArgumentTypeError("give at least one layer, e.g. -1 or norm")
    return layers


def words(text: str) -> list[str]:
    """``"dogs, puppy"`` -> ``["dogs", "puppy"]`` (argparse type of comma-separated word lists)."""
    return [w.strip() for w in text.split(",") if w.strip()]


def data_kwargs(args: argparse.Namespace) -> dict:
    """The :func:`~mmconcepts.data.open_dataset` keywords of :func:`add_data_args`' options."""
    kwargs = {"image_root": args.image_root, "split": args.split, "limit": args.limit}
    for name in ("image_column", "caption_column"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs
