"""One cell of the benchmark: a (token, seed, K, method) run, learnt, grounded and evaluated.

A cell is the public pipeline a user would run by hand: :func:`~mmconcepts.decompose.learn` on the training
store (the word's rows), :func:`~mmconcepts.concepts.ground`, :func:`~mmconcepts.evaluation.evaluate.evaluate`
of that folder alone (no comparison method, no baseline: every method is its own cell), then
:func:`~mmconcepts.evaluation.extended.collect.extended_metrics`. The baselines (Rnd-Words, Noise-Imgs, GT-captions)
are one more cell per (token, seed, K), evaluated next to the main method's folder as ``evaluate`` makes
them. Each finished cell is one JSON file, ``DIR/runs/<name>.json``, written atomically: its presence is
what "finished" means.

An imported SAE (``import:PATH``) is a cell like a method's, but its dictionary is
:func:`~mmconcepts.exchange.import_sae.import_sae` of the folder on the training store instead of ``learn``: K
is the SAE's own (the cell's K only files it), the seed changes nothing but the data, and its record says
``imported`` (the folder, the SAE's method and ``d_sae``).

With ``fidelity``, ``evaluate --fidelity``'s row of the method is in the record's metrics as
``fidelity_<field>`` (every number of the row, whatever its fields); with ``autointerp``, ``evaluate
--autointerp``'s columns are in the method's row already.

A method that cannot apply to the features (NMF needs non-negative features; the residual stream has
negative entries) is a finished cell too, ``{"skipped": reason}``, so the table says why the row is missing.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.files import read_json, write_json

BASELINES_CELL = "baselines"
#: The prefix of the fidelity numbers in a cell's metrics.
FIDELITY_PREFIX = "fidelity_"


def slug(text: str) -> str:
    """``text`` as a file name part: letters, digits, ``.``, ``_`` and ``-`` kept, anything else ``-``.

    Examples
    --------
    >>> slug("mypkg.dictionaries:MyDictionary")
    'mypkg.dictionaries-MyDictionary'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


@dataclass(frozen=True)
class Cell:
    """One run of the benchmark; ``method`` is :data:`BASELINES_CELL` for the baselines of (token, seed, K), the
    table's name of the method otherwise (``import:<folder name>`` for an imported SAE, whose folder is
    ``source``)."""

    token: str
    seed: int
    n_concepts: int
    method: str
    source: str | None = None

    @property
    def name(self) -> str:
        """The file name of the cell's record (without ``.json``), unique within a benchmark."""
        return f"{slug(self.token)}-seed{self.seed}-k{self.n_concepts}-{slug(self.method)}"

    def key(self) -> dict:
        """The fields every record of this cell starts with.

        Returns
        -------
        dict
            ``{"token", "seed", "n_concepts", "method"}``.
        """
        return {"token": self.token, "seed": self.seed, "n_concepts": self.n_concepts, "method": self.method}

    def work(self, out: Path) -> Path:
        """The folder of its concepts and evaluation.

        Parameters
        ----------
        out : Path
            The benchmark folder.

        Returns
        -------
        Path
            ``out/work/<token>/seed<s>/k<K>/<method>``.
        """
        return out / "work" / slug(self.token) / f"seed{self.seed}" / f"k{self.n_concepts}" / slug(self.method)


def record_path(out: Path, cell: Cell) -> Path:
    """Where the record of ``cell`` lives in the benchmark folder ``out``.

    Parameters
    ----------
    out : Path
    cell : Cell

    Returns
    -------
    Path
        ``out/runs/<cell.name>.json``.
    """
    return out / "runs" / f"{cell.name}.json"


def read_record(out: Path, cell: Cell) -> dict | None:
    """The finished cell's record.

    Parameters
    ----------
    out : Path
        The benchmark folder.
    cell : Cell

    Returns
    -------
    dict or None
        The record without its ``format_version``; ``None`` when the cell has not finished.
    """
    path = record_path(out, cell)
    if not path.is_file():
        return None
    record = read_json(path, "delete it to run that cell again")
    record.pop("format_version", None)
    return record


def _device_for(method: str, adapter) -> str:
    """The adapter's device for methods that take one, the CPU for the others."""
    from mmconcepts.decompose.registry import method_class

    accepts = "device" in inspect.signature(method_class(method).__init__).parameters
    return str(adapter.device) if accepts else "cpu"


def not_applicable(method: str, Z_train, n_concepts: int) -> str | None:
    """Why ``method`` cannot run on these features: scikit-learn's ``positive_only`` input tag (NMF) against
    features with negative entries.

    Parameters
    ----------
    method : str
        A registry name or method spec.
    Z_train : (N, D) tensor
        The training features.
    n_concepts : int

    Returns
    -------
    str or None
        The reason, or ``None`` when the method applies.
    """
    from sklearn.utils import get_tags

    from mmconcepts.decompose.registry import method_class

    if get_tags(method_class(method)(n_concepts=n_concepts)).input_tags.positive_only and \
            bool((Z_train < 0).any()):
        return f"{method} needs non-negative features, and these have negative entries"
    return None


def learn_and_ground(cell: Cell, stores: dict, layer: str, adapter, pool: str = "max",
                     decode: str = "auto") -> tuple[Path, dict]:
    """Learn the cell's dictionary on the training store and ground it (``work/.../concepts``).

    Parameters
    ----------
    cell : Cell
    stores : dict
        ``{"out": benchmark folder, "train": store, "test": store}``.
    layer : str
        The stored layer.
    adapter : ModelAdapter
        The loaded model (its head grounds the words).
    pool : str
        Image-token stores: how an image's concept activations pool its patches' (``learn --pool``).
    decode : str
        How the concepts are read as words (``learn --decode``).

    Returns
    -------
    (Path, dict)
        The concepts folder, and the seconds of ``learn`` and ``ground``.
    """
    from mmconcepts.decompose import learn
    from mmconcepts.concepts import ground

    folder = cell.work(stores["out"]) / "concepts"
    start = time.perf_counter()
    if cell.source is not None:
        from mmconcepts.exchange.import_sae import import_sae

        import_sae(cell.source, features=stores["train"], out=folder, layer=layer, token=cell.token, pool=pool,
                   overwrite=True)
    else:
        learn(stores["train"], layer, method=cell.method, n_concepts=cell.n_concepts, out=folder, seed=cell.seed,
              token=cell.token, device=_device_for(cell.method, adapter), pool=pool, overwrite=True)
    learnt = time.perf_counter()
    ground(folder, model=adapter, decode=decode)
    step = "import" if cell.source is not None else "learn"
    return folder, {step: round(learnt - start, 3), "ground": round(time.perf_counter() - learnt, 3)}


def fidelity_metrics(result: dict, method: str) -> dict:
    """Every number of ``method``'s row of ``metrics.json``'s ``fidelity``, named ``fidelity_<field>``.

    Parameters
    ----------
    result : dict
        The content of ``metrics.json`` (``evaluate(..., fidelity=True)``).
    method : str
        The evaluated method.

    Returns
    -------
    dict
        ``{"fidelity_<field>": value}``; empty without a fidelity row.

    Examples
    --------
    >>> fidelity_metrics({"fidelity": {"methods": {"pca": {"l0": 3.0, "kl_divergence": None}}}}, "pca")
    {'fidelity_l0': 3.0}
    """
    row = ((result.get("fidelity") or {}).get("methods") or {}).get(method) or {}
    return {FIDELITY_PREFIX + name: value for name, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def run_method(cell: Cell, stores: dict, layer: str, adapter, test: tuple, Z_train, extended: bool, *,
               fidelity: bool = False, autointerp: bool = False, pool: str = "max", decode: str = "auto") -> dict:
    """Learn (or import), ground and evaluate one method (and its extended metrics).

    Parameters
    ----------
    cell : Cell
    stores : dict
        ``{"out", "train", "test"}`` (:func:`learn_and_ground`).
    layer : str
    adapter : ModelAdapter
    test : (tensor, list of dict)
        The test features and metadata of the cell's token.
    Z_train : tensor
        Its training features.
    extended : bool
        Add :func:`~mmconcepts.evaluation.extended.collect.extended_metrics`.
    fidelity, autointerp : bool
        Evaluate with ``fidelity`` (its numbers added by :func:`fidelity_metrics`) and ``autointerp``.
    pool, decode : str
        :func:`learn_and_ground`'s.

    Returns
    -------
    dict
        The record: the cell's key, ``metrics``, ``seconds`` per step, ``n_train``, ``n_test`` and
        ``relative_error`` (and ``imported`` for an imported SAE); or the key and ``skipped``
        (:func:`not_applicable`).
    """
    from mmconcepts.evaluation.evaluate import evaluate

    reason = not_applicable(cell.method, Z_train, cell.n_concepts) if cell.source is None else None
    if reason is not None:
        return {**cell.key(), "skipped": reason}
    folder, seconds = learn_and_ground(cell, stores, layer, adapter, pool, decode)
    summary = read_json(folder / "summary.json", "run the benchmark again")
    method = summary["method"]  # the registry's name of an imported SAE's kind, else the cell's method
    start = time.perf_counter()
    result = evaluate(folder, stores["test"], cell.work(stores["out"]) / "eval", model=adapter,
                      methods=(method,), baselines=(), seed=cell.seed, fidelity=fidelity, autointerp=autointerp,
                      overwrite=True)
    metrics = {**result["methods"][method], **fidelity_metrics(result, method)}
    seconds["evaluate"] = round(time.perf_counter() - start, 3)
    if extended:
        from mmconcepts.evaluation.extended.collect import extended_metrics

        start = time.perf_counter()
        Z_test, test_meta = test
        metrics.update(extended_metrics(folder, Z_test, test_meta, model=adapter, Z_train=Z_train, seed=cell.seed))
        seconds["extended"] = round(time.perf_counter() - start, 3)
    record = {**cell.key(), "metrics": metrics, "seconds": seconds, "n_train": result["n_train"],
              "n_test": result["n_test"], "relative_error": summary.get("relative_error")}
    if cell.source is not None:
        record["imported"] = {"source": cell.source, "method": method, "d_sae": summary["n_concepts"]}
    return record


def run_baselines(cell: Cell, main: Cell, stores: dict, layer: str, adapter, baselines: tuple,
                  n_noise: int | None, pool: str = "max", decode: str = "auto") -> dict:
    """The baselines of (token, seed, K), as ``evaluate`` makes them next to the main method's folder.

    Parameters
    ----------
    cell : Cell
        The baselines cell.
    main : Cell
        The main method's cell of the same (token, seed, K); its folder is learnt again if it is gone.
    stores : dict
    layer : str
    adapter : ModelAdapter
    baselines : tuple of str
    n_noise : int or None
        Noise images of the Noise-Imgs baseline.
    pool, decode : str
        :func:`learn_and_ground`'s.

    Returns
    -------
    dict
        The record: the cell's key, ``follows`` (the main method), ``baselines`` ``{name: metrics}``, ``seconds``.
    """
    from mmconcepts.evaluation.evaluate import evaluate

    folder = main.work(stores["out"]) / "concepts"
    seconds = {}
    if not (folder / "grounding.json").is_file():
        folder, seconds = learn_and_ground(main, stores, layer, adapter, pool, decode)
    method = read_json(folder / "summary.json", "run the benchmark again")["method"]
    start = time.perf_counter()
    result = evaluate(folder, stores["test"], cell.work(stores["out"]) / "eval", model=adapter,
                      methods=(method,), baselines=baselines, seed=cell.seed, n_noise=n_noise,
                      overwrite=True)
    seconds["baselines"] = round(time.perf_counter() - start, 3)
    return {**cell.key(), "follows": main.method, "baselines": result["baselines"], "seconds": seconds}


def finish(out: Path, cell: Cell, record: dict) -> dict:
    """Write the cell's record atomically: from now on it is finished and never computed again.

    Parameters
    ----------
    out : Path
    cell : Cell
    record : dict

    Returns
    -------
    dict
        ``record``.
    """
    path = record_path(out, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record, indent=1)
    return record
