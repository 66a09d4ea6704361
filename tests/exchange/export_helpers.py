"""A small ShapesWorld run shared by the export tests (built once per process): the shipped captioner's
features of "circle" (24 images), every SAE method, Semi-NMF and PCA learnt on them (K = 4); Semi-NMF and PCA
grounded."""

from __future__ import annotations

import warnings

_RUN: dict = {}


def sae_methods() -> list[str]:
    """Our SAE methods (those this mmconcepts registers)."""
    from mmconcepts.decompose.registry import METHOD_NAMES
    from mmconcepts.exchange.export_saelens import SAE_ARCHITECTURES

    return [m for m in SAE_ARCHITECTURES if m in METHOD_NAMES]


def shapes_run(tmp_path_factory) -> dict:
    """``{"root", "features", "<method>": concepts folder}``; grounded: semi-nmf and pca."""
    if _RUN:
        return _RUN
    from mmconcepts.concepts import ground
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("export")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "train", n=24, seed=5, split="train")
    extract(root / "train", "circle", out=root / "features", model=adapter, layers=["norm"], batch_size=24,
            max_new_tokens=16, progress=False)
    run = {"root": root, "features": root / "features", "adapter": adapter}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in [*sae_methods(), "semi-nmf", "pca"]:
            run[method] = learn(root / "features", "norm", method=method, n_concepts=4, out=root / method,
                                seed=0)
    for method in ("semi-nmf", "pca"):
        ground(root / method, model=adapter)
    _RUN.update(run)
    return _RUN
