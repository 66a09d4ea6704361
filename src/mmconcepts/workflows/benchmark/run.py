"""``mmconcepts benchmark``: every (token, seed, K, method) cell, then the table with confidence intervals.

The folder ``DIR`` it writes::

    settings.json              the BenchmarkSettings (a second run into DIR resumes; a changed one is refused)
    data/seed<s>/{train,test}  ShapesWorld, generated per seed as the demo generates it (train seed s, test s+1)
    features/seed<s>/{train,test}   one extraction per data seed, every token in the same pass (resumable
                               stores); ``extraction.json`` beside them records how long it took
    work/<token>/seed<s>/k<K>/<method>/{concepts,eval}   each cell's concepts folder and evaluation
    runs/<token>-seed<s>-k<K>-<method>.json   each finished cell's numbers (its presence = finished)
    benchmark.json             {"format_version", "settings", "methods", "runs": [...], "summary", "summary_by_k",
                               "per_token", "skipped", "apart", "timings"} (:mod:`~mmconcepts.workflows.benchmark.summary`)
    benchmark.md, benchmark.html   the table (method x metric, mean and 95% interval), per token, against K

With the data given (``data`` / ``test_data``) there is one extraction (``features/{train,test}``) and the
seeds are the dictionaries' only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mmconcepts.workflows.benchmark.cells import BASELINES_CELL, Cell, finish, read_record, run_baselines, run_method
from mmconcepts.workflows.benchmark.settings import NOT_SETTINGS, BenchmarkSettings, imported_source, method_name
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import atomic_write_text, read_json, write_json
from mmconcepts.outputs import FolderLock, make_dirs
from mmconcepts.records import changed_setting

SETTINGS_FILE = "settings.json"
#: Settings added after benchmarks were first written, with the value a benchmark made before them ran with.
ADDED_SETTINGS = {"fidelity": False, "autointerp": False}


def _open(out: Path, settings: BenchmarkSettings) -> int:
    """Start ``out`` or check that it is this benchmark; the number of cells already finished."""
    path = out / SETTINGS_FILE
    record = settings.to_json()
    if path.is_file():
        saved = read_json(path, "use a new --out").get("settings", {})
        # before --pool and --decode, image-token cells pooled by the mean and read through the unembedding (token
        # cells do not pool, and auto reads them through it)
        image = saved.get("positions") == "image"
        old = {**ADDED_SETTINGS, "pool": "mean" if image else "max", "decode": "effect" if image else "auto",
               **saved}
        change = changed_setting(old, record, NOT_SETTINGS)
        if change:
            key, was, now = change
            raise MMConceptsError(f"cannot resume the benchmark in {out}: it was made with {key}={was!r}, not "
                                  f"{now!r}; use a new --out or the same settings")
        return len(list((out / "runs").glob("*.json"))) if (out / "runs").is_dir() else 0
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MMConceptsError(f"{out} is not empty and holds no benchmark: choose a new --out")
    make_dirs(out)
    write_json(path, {"settings": record}, indent=2)
    return 0


def _extract(data, store: Path, settings: BenchmarkSettings, adapter, progress: bool) -> None:
    """The store of every token at ``store``: made, resumed when interrupted, left alone when complete."""
    from mmconcepts.extract import extract, read_manifest
    from mmconcepts.extract.extraction import ExtractionSettings

    if (store / "manifest.json").is_file() and read_manifest(store).get("complete"):
        return
    extraction = ExtractionSettings(token=settings.tokens, layers=(settings.layer,), batch_size=settings.batch_size,
                                    max_new_tokens=settings.max_new_tokens, positions=settings.positions)
    extract(data, out=store, model=adapter, settings=extraction, resume=True, progress=progress)


def _stores(out: Path, settings: BenchmarkSettings, data_seed: int | None, adapter, progress: bool, log) -> dict:
    """The train and test stores of one data seed (``None``: the given data), made if needed."""
    from mmconcepts.data.shapesworld import write_dataset

    where = out / "features" / (f"seed{data_seed}" if data_seed is not None else "")
    stores = {"out": out, "train": where / "train", "test": where / "test"}
    timing = where / "extraction.json"
    if timing.is_file():
        return stores
    start = time.perf_counter()
    if data_seed is None:
        sources = {"train": settings.data, "test": settings.test_data}
    else:
        sources = {split: out / "data" / f"seed{data_seed}" / split for split in ("train", "test")}
        for split, seed, n in (("train", data_seed, settings.n_train), ("test", data_seed + 1, settings.n_test)):
            if not sources[split].is_dir():  # written atomically: a folder there is complete
                write_dataset(sources[split], n=n, seed=seed, split=split)
    log(f"extracting {', '.join(settings.tokens)}" + (f" (data seed {data_seed})" if data_seed is not None else ""))
    for split in ("train", "test"):
        _extract(sources[split], stores[split], settings, adapter, progress)
    write_json(timing, {"seconds": round(time.perf_counter() - start, 2)})
    return stores


def plan(settings: BenchmarkSettings) -> list[Cell]:
    """Every cell, in the order they run: data seed, token, K, then the methods and the baselines.

    Parameters
    ----------
    settings : BenchmarkSettings

    Returns
    -------
    list of Cell
    """
    cells = []
    for seed in settings.seeds:
        for token in settings.tokens:
            for k in settings.n_concepts:
                cells += [_cell(token, seed, k, method) for method in settings.methods]
                if settings.baselines:
                    cells.append(Cell(token, seed, k, BASELINES_CELL))
    return cells


def _cell(token: str, seed: int, k: int, method: str) -> Cell:
    """The cell of a method entry (an ``import:PATH`` one named by its folder, :func:`method_name`)."""
    return Cell(token, seed, k, method_name(method), imported_source(method))


def _headline(record: dict) -> str:
    if "skipped" in record:
        return f"skipped: {record['skipped']}"
    seconds = sum((record.get("seconds") or {}).values())
    if "baselines" in record:
        parts = [f"{name} precision@1 {row['grounding_precision_top1']:.3f}"
                 for name, row in record["baselines"].items()
                 if isinstance(row.get("grounding_precision_top1"), (int, float))]
        return ", ".join(parts) + f" ({seconds:.1f} s)"
    row = record["metrics"]
    names = {"grounding_precision_top1": "precision@1", "coverage": "coverage", "overlap": "overlap",
             "stability": "stability"}
    parts = [f"{label} {row[key]:.3f}" for key, label in names.items() if isinstance(row.get(key), (int, float))]
    return ", ".join(parts) + f" ({seconds:.1f} s)"


def run_benchmark(settings: BenchmarkSettings | None = None, out: str | os.PathLike = "mmconcepts-benchmark", *,
                  progress: bool = False, log=print, **fields) -> dict:
    """Run (or resume) a benchmark into ``out``; returns the content of ``benchmark.json``.

    Parameters
    ----------
    settings : :class:`~mmconcepts.workflows.benchmark.settings.BenchmarkSettings`, or its fields as keywords.
    out : the benchmark folder: new or empty, or a benchmark with the same settings (finished cells are
        kept, the others run).
    progress : extraction progress bars.
    log : where the progress lines go (one per cell).

    Returns
    -------
    dict : ``benchmark.json`` (:func:`~mmconcepts.workflows.benchmark.summary.summarize`).
    """
    if settings is None:
        settings = BenchmarkSettings(**fields)
    elif fields:
        raise MMConceptsError("give the benchmark settings either as settings= or as keywords, not both")
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise MMConceptsError(f"--out {out} exists and is not a folder: choose another --out")
    with FolderLock(out):  # one benchmark run per folder; a second one started beside it is refused
        return _run(out, settings, progress, log)


def _run(out: Path, settings: BenchmarkSettings, progress: bool, log) -> dict:
    """The cells of :func:`run_benchmark`, ``out`` locked."""
    from mmconcepts.workflows.benchmark.summary import summarize
    from mmconcepts.workflows.benchmark.tables import markdown
    from mmconcepts.extract.features import load_features
    from mmconcepts.report.benchmark_page import build_benchmark_report

    start = time.perf_counter()
    done = _open(out, settings)
    cells = plan(settings)
    log(f"benchmark {out}: {len(cells)} runs" + (f", {done} finished before (resuming)" if done else ""))
    adapter = None
    records = {}
    for seed in settings.seeds:
        todo = [c for c in cells if c.seed == seed and read_record(out, c) is None]
        if todo and adapter is None:
            adapter = settings.model.load()
        stores = _stores(out, settings, seed if settings.shapesworld else None, adapter, progress, log) \
            if todo else None
        for token in settings.tokens:
            mine = [c for c in cells if c.seed == seed and c.token == token]
            loaded = None
            for cell in mine:
                record = read_record(out, cell)
                if record is None:
                    if loaded is None:
                        loaded = (load_features(stores["train"], settings.layer, token)[0],
                                  load_features(stores["test"], settings.layer, token))
                    if cell.method == BASELINES_CELL:
                        main = _cell(token, seed, cell.n_concepts, settings.main_method)
                        if "skipped" in (read_record(out, main) or {}):
                            record = {**cell.key(), "skipped": f"the main method {main.method} was skipped"}
                        else:
                            record = run_baselines(cell, main, stores, settings.layer, adapter, settings.baselines,
                                                   settings.n_noise, pool=settings.pool, decode=settings.decode)
                    else:
                        record = run_method(cell, stores, settings.layer, adapter, loaded[1], loaded[0],
                                            settings.extended, fidelity=settings.fidelity,
                                            autointerp=settings.autointerp, pool=settings.pool,
                                            decode=settings.decode)
                    finish(out, cell, record)
                    log(f"[{cells.index(cell) + 1:>3}/{len(cells)}] {token} seed {seed} K={cell.n_concepts} "
                        f"{cell.method}: {_headline(record)}")
                records[cell] = record
    extraction = {}
    for timing in sorted((out / "features").glob("**/extraction.json")):
        extraction[timing.parent.name] = read_json(timing, "run the benchmark again")["seconds"]
    result = summarize([records[c] for c in cells], settings, extraction_s=extraction,
                       wall_s=round(time.perf_counter() - start, 2))
    write_json(out / "benchmark.json", result, indent=1)
    atomic_write_text(out / "benchmark.md", markdown(result))
    build_benchmark_report(result, out / "benchmark.html")
    return result


def read_benchmark(path: str | os.PathLike) -> dict:
    """The ``benchmark.json`` of a benchmark folder (or the file itself).

    Parameters
    ----------
    path : path

    Returns
    -------
    dict
        Its content; a one-line error for a missing, corrupt or foreign file.
    """
    path = Path(path)
    file = path / "benchmark.json" if path.is_dir() else path
    data = read_json(file, "run mmconcepts benchmark")
    if not isinstance(data.get("summary"), dict) or not isinstance(data.get("runs"), list):
        raise MMConceptsError(f"{file} is not a benchmark file (no summary or runs); run mmconcepts benchmark")
    return data
