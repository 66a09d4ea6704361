"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="hub id or local folder (default: the embedded ShapesWorld captioner)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    parser.add_argument("--model-dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype the model runs in")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required,
                        help="folder with captions.jsonl/captions.csv, or a Karpathy-style dataset_coco.json")
    parser.add_argument("--image-root", default=None, help="folder holding the images of a Karpathy JSON")
    parser.add_argument("--split", default=None, help="keep only this split (train, val, test, ...)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")


def layer_list(text: str) -> list[str]:
    """``"-1,norm"`` -> ``["-1", "norm"]``."""
    layers = [part.strip() for part in text.split(",") if part.strip()]
    if not layers:
        raise argparse.ArgumentTypeError("give at least one layer, e.g. -1 or norm")
    return layers
