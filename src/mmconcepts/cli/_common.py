"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import re

from mmconcepts.models.options import ModelOptions
from mmconcepts.params import add_arguments, fraction, from_args, nonnegative_float, nonnegative_int, positive_int

__all__ = ["LAYER_OPTIONS", "add_data_args", "add_grounding_args", "add_model_args", "data_kwargs", "fraction",
           "grounding_finish", "join_layer_values", "layer_list", "model_options", "nonnegative_float",
           "nonnegative_int", "positive_int", "words"]

#: Options whose value may start with "-" (a negative layer index): ``--layers -1,norm`` is read as written.
LAYER_OPTIONS = ("--layers", "--layer")
_NEGATIVE_LAYERS = re.compile(r"^-\d[\w\s,-]*$")


def add_model_args(parser: argparse.ArgumentParser, follows_store: bool = False) -> None:
    """The model options of every command that loads a model, with the same names and meaning everywhere.

    ``follows_store``: the command works on a feature store, and every option left out is taken from the
    store's run record (the model, its commit, dtype and placement it was extracted with).
    """
    g = parser.add_argument_group("model", "how the model is loaded" + (
        "; each option left out is taken from the feature store's run record" if follows_store else ""))
    store = {"model": "the feature store's", "model_dtype": "the feature store's", "device_map": "the feature store's",
             "revision": "the commit the store was made with", "prompt_template": "the store's"}
    add_arguments(g, ModelOptions, shown=store if follows_store else None)


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The :class:`~mmconcepts.models.options.ModelOptions` of a command's model arguments."""
    return from_args(ModelOptions, args)


def add_grounding_args(parser: argparse.ArgumentParser) -> None:
    """``--no-ground`` and the grounding settings of a command that writes a concepts folder (learn, import-sae)."""
    from mmconcepts.concepts.settings import GroundingSettings

    g = parser.add_argument_group("grounding (words through the unembedding, most activating images)")
    g.add_argument("--no-ground", action="store_true",
                   help="skip grounding (it reads the model's unembedding and final norm)")
    add_arguments(g, GroundingSettings)


def grounding_finish(args: argparse.Namespace, options: ModelOptions):
    """The ``finish`` step that grounds a new concepts folder with ``options`` before it is swapped in (a failure
    leaves ``--out`` as it was); ``None`` with ``--no-ground``."""
    from mmconcepts.concepts.settings import GroundingSettings

    if args.no_ground:
        return None
    grounding = from_args(GroundingSettings, args)

    def ground_in(folder):
        from mmconcepts.concepts import ground

        ground(folder, model=options, settings=grounding)

    return ground_in


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
