"""The evaluation's settings: what an evaluation compares and how it scores (:class:`EvaluationSettings`),
validated once and written into ``metrics.json``."""

from __future__ import annotations

from dataclasses import dataclass

from mmconcepts.attribution.settings import METHODS as MAP_METHODS
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.causal.settings import ABLATE_WHERE
from mmconcepts.evaluation.fidelity.settings import DEFAULT_N_IMAGES as FIDELITY_IMAGES
from mmconcepts.params import Boolean, Interval, Many, Options, Text, param, validate

DEFAULT_METHODS = ("semi-nmf", "pca", "kmeans", "simple")
BASELINES = ("rnd-words", "noise-imgs", "gt-captions")


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation compares and how it scores; validated once, written into ``metrics.json``.

    Parameters
    ----------
    methods : the dictionary methods to compare (the main one among them or not).
    baselines : any of ``rnd-words``, ``noise-imgs``, ``gt-captions``.
    clip_model, bert_model : CLIP and BERTScore models (hub ids or folders); ``None``: no such score.
    bert_layers : the BERTScore layer (``None``: the model's default).
    seed : seed of the comparison methods, the random words and the noise.
    n_noise : noise images (``None``: as many as training samples, at most 512).
    n_explanations : test samples whose local explanation is kept.
    causal : also run the causal evaluation (:mod:`mmconcepts.evaluation.causal.interventions`: steer and ablate with each
        concept, read the captions): ``steering_success``, ``ablation_success``, ``specificity`` and
        ``fluency`` in each method's row, and the ``centred-direction``, ``random-direction`` and ``diffmean``
        baselines. Needs the whole model.
    causal_images : test images the causal evaluation intervenes on (a seeded sample; the same for every
        concept and control).
    causal_methods : the methods whose concepts the causal evaluation steers with (``None``: every compared
        method); the main method's controls are always measured.
    causal_ablate_where : concepts learnt on image tokens: ablate each where it is active (``"active"``) or over
        the token object's patches only (``"object"``; :mod:`mmconcepts.evaluation.causal.image_tokens`).
    heatmaps : concept-map methods (:data:`~mmconcepts.attribution.METHODS`) to measure on ShapesWorld:
        the pointing game and energy inside of each test image's top-1 concept
        (:mod:`mmconcepts.evaluation.attribution.map_scores`) into ``metrics.json``'s ``heatmaps``, and ``maps.json`` (the
        first method's maps of the concepts' top images and of the explanations) for the report. Needs the
        whole model.
    fidelity : also splice each method's reconstruction into the model at the concepts' layer, at the token's
        position (:mod:`mmconcepts.evaluation.fidelity.splice`): explained variance, L0, dead concepts, KL
        divergence and cross-entropy loss recovered against zero- and mean-ablation (the layer's mean state over
        every position), captions unchanged; into ``metrics.json``'s ``fidelity``. Needs the whole model.
    fidelity_images : test images the fidelity evaluation splices into (a seeded sample; ``None``: all).
    autointerp : also name each concept from its top images with a captioning model and score the names
        (:mod:`mmconcepts.evaluation.autointerp`): detection, and on ShapesWorld truth, for the model-written names
        and for the words through the unembedding, side by side in each method's row; ``autointerp.json``.
    namer : the model that writes the names (hub id or folder; ``None``: the studied model). Needs the whole
        model.
    extended : also compute the extended metrics of every method (not the baselines):
        :func:`~mmconcepts.evaluation.extended.collect.extended_metrics` (words per concept, strict and fixed-word
        precision and overlap, coverage per attribute kind, sparse probing, stability), merged into its row.
    """

    methods: tuple[str, ...] = param(DEFAULT_METHODS, constraint=Many(Text(word=True), empty=True),
                                     help="comma-separated methods to compare")
    baselines: tuple[str, ...] = param(BASELINES, constraint=Many(Options(BASELINES, noun="baseline"), empty=True),
                                       help="comma-separated baselines ('' for none)")
    clip_model: str | None = param(None, constraint=Text(), optional=True, shown="no CLIPScore",
                                   help="CLIP hub id or folder, e.g. openai/clip-vit-base-patch32")
    bert_model: str | None = param(None, constraint=Text(), optional=True, shown="no BERTScore",
                                   help="BERTScore model hub id or folder")
    bert_layers: int | None = param(None, constraint=Interval(int, 1), optional=True, shown="the last",
                                    help="BERTScore layer")
    seed: int = param(0, constraint=Interval(int, 0), help="random seed of the comparison methods")
    n_noise: int | None = param(None, constraint=Interval(int, 1), optional=True, flag=None,
                                help="noise images of the Noise-Imgs baseline")
    n_explanations: int = param(8, constraint=Interval(int, 0), flag=None,
                                help="test samples whose local explanation is kept")
    causal: bool = param(False, constraint=Boolean(),
                         help="also steer and ablate with each concept and parse the captions: steering/ablation "
                              "success, specificity, fluency, and the centred-direction, random-direction and "
                              "diffmean baselines (needs the whole model; slower)")
    causal_images: int = param(60, constraint=Interval(int, 1), metavar="N",
                               help="test images the causal evaluation steers and ablates on (a seeded sample)")
    causal_methods: tuple[str, ...] | None = param(None, constraint=Many(Text(word=True), empty=True), optional=True,
                                                   metavar="METHODS", shown="every method of --methods",
                                                   help="comma-separated methods whose concepts --causal steers with "
                                                        "(the main method's controls are always measured)")
    causal_ablate_where: str = param("active", constraint=Options(ABLATE_WHERE, noun="ablate_where"),
                                     help="image-token concepts: ablate where the concept is active, or over the "
                                          "token object's patches only (object)")
    fidelity: bool = param(False, constraint=Boolean(),
                           help="also splice each method's reconstruction into the model at the token's position: "
                                "explained variance, L0, dead concepts, KL divergence and cross-entropy loss "
                                "recovered (against zero and mean ablation), captions unchanged (needs the whole "
                                "model)")
    fidelity_images: int | None = param(FIDELITY_IMAGES, constraint=Interval(int, 1), optional=True, metavar="N",
                                        help="test images --fidelity splices into (a seeded sample)")
    autointerp: bool = param(False, constraint=Boolean(),
                             help="also name each concept from its top images with a captioning model (the words its "
                                  "captions of them hold more than of random images) and score the names and the "
                                  "unembedding words side by side: detection, and on ShapesWorld truth")
    namer: str | None = param(None, constraint=Text(), optional=True, shown="the studied model", metavar="MODEL",
                              help="image-text-to-text model that names the concepts for --autointerp (hub id or "
                                   "folder)")
    extended: bool = param(False, constraint=Boolean(),
                           help="also compute the extended metrics of every method: words per concept, empty "
                                "concepts, strict and fixed-word (3, 10) precision and overlap, coverage per "
                                "attribute kind, k-sparse probing and stability (refits each method; slower)")
    heatmaps: tuple[str, ...] = param((), constraint=Many(Options(MAP_METHODS, noun="heatmap method"), empty=True),
                                      metavar="METHODS", nargs="?", const=MAP_METHODS,
                                      help="also map each test image's top-1 concept and score the maps against "
                                           "ShapesWorld's objects (pointing game, energy inside, next to the centre "
                                           "and random-patch baselines); comma-separated methods, all of them when "
                                           "--heatmaps is given alone; the first one's maps go to maps.json for the "
                                           "report (needs the whole model)")

    def __post_init__(self):
        from mmconcepts.decompose import METHODS

        validate(self)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise MMConceptsError(f"unknown method or baseline {unknown[0]!r}: choose from "
                                  f"{', '.join(list(METHODS) + list(BASELINES))}")
        stray = [m for m in self.causal_methods or () if m not in self.methods]
        if stray:
            raise MMConceptsError(f"causal method {stray[0]!r} is not among the compared methods "
                                  f"({', '.join(self.methods)}); add it to --methods")
