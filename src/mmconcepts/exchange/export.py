"""``mmconcepts export``: a concepts folder written out for the SAE ecosystem, one folder per export, built beside
and swapped in (:class:`~mmconcepts.outputs.OutputFolder`).

``--format saelens`` writes the layout ``sae_lens.SAE.load_from_disk`` loads
(:mod:`~mmconcepts.exchange.export_saelens`); ``--format neuronpedia`` Neuronpedia's export rows
(:mod:`~mmconcepts.exchange.export_neuronpedia`). docs/FORMAT.md lists both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.attribution.settings import METHODS as MAP_METHODS
from mmconcepts.errors import MMConceptsError
from mmconcepts.params import Boolean, Interval, Options, param, settings_from, validate

__all__ = ["FORMATS", "ExportResult", "ExportSettings", "export"]

#: The formats ``mmconcepts export`` writes.
FORMATS = ("saelens", "neuronpedia")


@dataclass(frozen=True)
class ExportSettings:
    """What ``mmconcepts export`` writes.

    Examples
    --------
    >>> ExportSettings("neuronpedia", maps="attribution").maps
    'attribution'
    >>> ExportSettings("onnx")
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: unknown format 'onnx': choose saelens or neuronpedia
    """

    format: str = param(constraint=Options(FORMATS, noun="format"), help="the layout written")
    copy_images: bool = param(True, flag="--copy-images", constraint=Boolean(),
                              help="neuronpedia: copy a thumbnail of every top image into the export (else link "
                                   "the originals, relative to --out)")
    n_images: int | None = param(None, constraint=Interval(int, 1), optional=True, shown="the grounding's",
                                 help="neuronpedia: activations (top images) per concept")
    maps: str | None = param(None, constraint=Options(MAP_METHODS, noun="map method"), optional=True,
                             help="neuronpedia: map every activation's image with this method (loads the model)")
    vectors: bool = param(False, constraint=Boolean(),
                          help="neuronpedia: write each concept's direction as its feature's vector")

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class ExportResult:
    """What was written: the folder, and the export's own record (``ExportFidelity`` or ``NeuronpediaExport``)."""

    out: Path
    format: str
    record: object


def export(concepts: str | os.PathLike, out: str | os.PathLike, settings: ExportSettings | None = None, *,
           overwrite: bool = False, model=None, **fields) -> ExportResult:
    """Export the concepts folder ``concepts`` to ``out`` (refused when ``out`` is not empty unless ``overwrite``).

    Parameters
    ----------
    concepts : a folder written by ``mmconcepts learn``
    out : the export folder
    settings : :class:`ExportSettings`, or its fields as keywords
    overwrite : replace an existing ``out``
    model : the model for ``maps`` (default: the feature store's)

    Returns
    -------
    ExportResult
    """
    from mmconcepts.concepts.concept_set import load_concepts
    from mmconcepts.outputs import OutputFolder

    settings = settings_from(ExportSettings, settings, fields, "export")
    path = Path(concepts)
    if not (path / "summary.json").is_file() and path.is_dir():
        raise MMConceptsError(f"{path} is not a concepts folder (no summary.json); give a folder written by "
                              "`mmconcepts learn`")
    if settings.format == "saelens":
        from mmconcepts.exchange.export_saelens import hook_name

        loaded = load_concepts(path)
        hook_name(loaded.summary["layer"])  # a layer SAELens cannot name: refused before anything is written
    else:
        loaded = load_concepts(path, require_grounding=True)
    with OutputFolder(out, overwrite=overwrite, inputs=[path]) as tmp:
        if settings.format == "saelens":
            from mmconcepts.exchange.export_saelens import write_saelens

            record = write_saelens(loaded, tmp)
        else:
            from mmconcepts.exchange.export_neuronpedia import write_neuronpedia

            record = write_neuronpedia(loaded, tmp, out, copy_images=settings.copy_images, n_images=settings.n_images,
                                       maps=settings.maps, vectors=settings.vectors, model=model)
    return ExportResult(Path(out), settings.format, record)
