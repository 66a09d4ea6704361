"""A tiny benchmark end to end (2 tokens x 2 seeds x 2 methods, one of them a user's class): the
benchmark.json schema, intervals recomputed from the runs, resume after an interrupt, changed settings."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mmconcepts.workflows.benchmark import BenchmarkSettings, read_benchmark, run_benchmark
from mmconcepts.workflows.benchmark import run as run_module
from mmconcepts.workflows.benchmark.summary import interval
from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CUSTOM = "spherical_kmeans:SphericalKMeans"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The benchmark interrupted at its third method run, then resumed to the end; what each run did."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `mmconcepts benchmark --threads 1` does: the tiny model runs faster so
    try:
        return _interrupted_then_resumed(tmp_path_factory.mktemp("bench") / "b")
    finally:
        torch.set_num_threads(threads)


def _interrupted_then_resumed(out: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        settings = BenchmarkSettings(tokens=("circle", "star"), seeds=(0, 1), methods=("semi-nmf", CUSTOM),
                                     n_concepts=(4,), n_train=80, n_test=24,
                                     baselines=("rnd-words", "gt-captions"))
        calls = []
        original = run_module.run_method

        def interrupted(cell, *args, **kwargs):
            calls.append(cell.name)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(cell, *args, **kwargs)

        mp.setattr(run_module, "run_method", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(settings, out, log=lambda line: None)
        before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
        extraction = (out / "features" / "seed0" / "extraction.json").stat().st_mtime_ns
        resumed = []
        mp.setattr(run_module, "run_method", lambda cell, *a, **k: resumed.append(cell.name) or original(cell, *a, **k))
        lines = []
        result = run_benchmark(settings, out, log=lines.append)
    return {"out": out, "settings": settings, "result": result, "before": before, "calls": calls,
            "resumed": resumed, "extraction": extraction, "lines": lines}


def test_benchmark_json_holds_every_run_and_intervals_over_tokens_x_seeds(bench):
    result, settings = bench["result"], bench["settings"]
    on_disk = read_benchmark(bench["out"])
    assert on_disk["format_version"] == 2 and on_disk["summary"] == result["summary"]
    assert len(result["runs"]) == 2 * 2 * (2 + 1)  # tokens x seeds x (methods + the baselines cell)
    assert list(result["summary"]) == ["semi-nmf", CUSTOM, "rnd-words", "gt-captions"]
    assert result["settings"] == settings.to_json() and result["skipped"] == []
    for row in result["summary"].values():
        for stats in row.values():
            assert set(stats) == {"mean", "ci95", "n"}
            assert stats["ci95"][0] <= stats["mean"] <= stats["ci95"][1]
    for method in ("semi-nmf", CUSTOM):
        values = [r["metrics"]["grounding_precision_top1"] for r in result["runs"] if r["method"] == method]
        stats = result["summary"][method]["grounding_precision_top1"]
        assert len(values) == stats["n"] == 4 and stats == interval(values)
        assert stats["mean"] == pytest.approx(sum(values) / 4, abs=1e-4)
    gt = [r["baselines"]["gt-captions"]["grounding_precision_top1"] for r in result["runs"]
          if r["method"] == "baselines"]
    assert result["summary"]["gt-captions"]["grounding_precision_top1"] == interval(gt)
    assert set(result["per_token"]["4"]) == {"circle", "star"}
    assert result["per_token"]["4"]["star"]["semi-nmf"]["coverage"]["n"] == 2  # over the 2 seeds
    assert set(result["timings"]["cells_s"]) >= {"learn", "ground", "evaluate", "baselines"}
    assert set(result["timings"]["extraction_s"]) == {"seed0", "seed1"}
    record = json.loads((bench["out"] / "runs" / "star-seed1-k4-semi-nmf.json").read_text())
    assert record["metrics"] == next(r for r in result["runs"] if r["method"] == "semi-nmf" and r["token"] == "star"
                                     and r["seed"] == 1)["metrics"]


def test_resume_recomputes_only_the_unfinished_cells(bench):
    # interrupted in its third method run (star, seed 0): circle's two methods and baselines had finished
    assert bench["calls"] == ["circle-seed0-k4-semi-nmf", "circle-seed0-k4-spherical_kmeans-SphericalKMeans",
                              "star-seed0-k4-semi-nmf"]
    assert sorted(bench["before"]) == ["circle-seed0-k4-baselines.json", "circle-seed0-k4-semi-nmf.json",
                                       "circle-seed0-k4-spherical_kmeans-SphericalKMeans.json"]
    assert len(bench["resumed"]) == 8 - 2 and not set(bench["resumed"]) & {n[:-5] for n in bench["before"]}
    for name, mtime in bench["before"].items():
        assert (bench["out"] / "runs" / name).stat().st_mtime_ns == mtime
    assert (bench["out"] / "features" / "seed0" / "extraction.json").stat().st_mtime_ns == bench["extraction"]
    assert bench["lines"][0].endswith("12 runs, 3 finished before (resuming)")
    assert sum(line.startswith("[") for line in bench["lines"]) == 12 - 3


def test_a_changed_setting_is_refused_and_nothing_changes(bench):
    before = {p: p.stat().st_mtime_ns for p in bench["out"].rglob("*.json")}
    with pytest.raises(MMConceptsError, match=r"it was made with seeds=\[0, 1\], not \[0\]; use a new --out"):
        run_benchmark(replace(bench["settings"], seeds=(0,)), bench["out"])
    with pytest.raises(MMConceptsError, match=r"it was made with n_train=80, not 200"):
        run_benchmark(replace(bench["settings"], n_train=200), bench["out"])
    assert {p: p.stat().st_mtime_ns for p in bench["out"].rglob("*.json")} == before


def test_a_benchmark_made_before_the_fidelity_and_autointerp_flags_resumes(bench):
    path = bench["out"] / "settings.json"
    text = path.read_text()
    record = json.loads(text)
    assert record["settings"].pop("fidelity") is False and record["settings"].pop("autointerp") is False
    assert record["settings"].pop("pool") == "max"  # token rows do not pool: an old benchmark resumes as it was
    assert record["settings"].pop("decode") == "auto"  # and auto reads word concepts as effect did
    try:
        path.write_text(json.dumps(record))
        assert run_benchmark(bench["settings"], bench["out"], log=lambda line: None)["summary"] == \
            bench["result"]["summary"]
        with pytest.raises(MMConceptsError, match="it was made with fidelity=False, not True"):
            run_benchmark(replace(bench["settings"], fidelity=True), bench["out"])
    finally:
        path.write_text(text)


def test_the_custom_method_is_a_row_like_ours(bench):
    result = bench["result"]
    assert set(result["summary"][CUSTOM]) == set(result["summary"]["semi-nmf"])
    concepts = bench["out"] / "work" / "circle" / "seed0" / "k4" / "spherical_kmeans-SphericalKMeans" / "concepts"
    assert json.loads((concepts / "summary.json").read_text())["method"] == CUSTOM
    assert (concepts / "grounding.json").is_file()
    md = (bench["out"] / "benchmark.md").read_text()
    assert f"| metric | semi-nmf | {CUSTOM} | rnd-words | gt-captions |" in md
    assert "Where the table cannot tell methods apart" in md and "### star" in md


def test_the_report_page_is_self_contained(bench):
    html = (bench["out"] / "benchmark.html").read_text()
    assert "default-src 'none'" in html and "<script" not in html and "http://" not in html
    assert CUSTOM in html and "Per token" in html and "Where the table cannot tell methods apart" in html


def test_the_command_resumes_a_finished_benchmark_and_prints_the_table(bench, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    before = {p.name: p.stat().st_mtime_ns for p in (bench["out"] / "runs").glob("*.json")}
    argv = ["benchmark", "--out", str(bench["out"]), "--tokens", "circle,star", "--seeds", "0,1", "--methods",
            f"semi-nmf,{CUSTOM}", "--n-concepts", "4", "--n-train", "80", "--n-test", "24",
            "--baselines", "rnd-words,gt-captions", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| grounding_precision_top1 |" in out and "wrote" in out and "(12 runs)" in out
    assert {p.name: p.stat().st_mtime_ns for p in (bench["out"] / "runs").glob("*.json")} == before
    assert main([*argv[:-1], "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume the benchmark" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], "expected an integer >= 0, got 'x'"),
    (["--methods", "semi-nmf,no_such_module_q:Cls"], "cannot import module 'no_such_module_q'"),
    (["--methods", "ica"], "unknown method 'ica'"),
    (["--data", "somewhere"], "give --data and --test-data together"),
    (["--n-concepts", "0"], "argument -k/--n-concepts: must be an integer >= 1"),
])
def test_bad_flags_are_one_line_errors_and_write_nothing(tmp_path, capsys, argv, message):
    assert main(["benchmark", "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "b").exists()


def test_a_folder_that_is_no_benchmark_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(MMConceptsError, match="is not empty and holds no benchmark"):
        run_benchmark(BenchmarkSettings(extended=False), tmp_path / "b")


def test_an_image_token_benchmark_scores_patches_and_records_its_pooling(tmp_path):
    """``--positions image``: the patch metrics and the random-direction row in the table, the pooling in each
    cell's concepts; a benchmark made before ``--pool`` pooled by the mean and resumes only with it."""
    settings = BenchmarkSettings(tokens=("circle",), seeds=(0,), methods=("semi-nmf",), n_concepts=(4,),
                                 n_train=40, n_test=12, layer="1", positions="image", extended=False,
                                 baselines=("rnd-words",))
    out = tmp_path / "b"
    result = run_benchmark(settings, out, log=lambda line: None)
    row = result["summary"]["semi-nmf"]
    assert {"patch_precision", "pointing", "patch_coverage"} <= set(row)
    assert {"patch_precision", "pointing"} <= set(result["summary"]["random-direction"])
    summaries = list(out.rglob("semi-nmf/concepts/summary.json"))
    assert summaries and all(json.loads(p.read_text())["pool"] == "max" for p in summaries)
    with pytest.raises(MMConceptsError, match="it was made with pool='max', not 'mean'"):
        run_benchmark(replace(settings, pool="mean"), out)
    path = out / "settings.json"
    groundings = list(out.rglob("semi-nmf/concepts/grounding.json"))
    assert groundings and all(json.loads(p.read_text())["decode"] == "caption" for p in groundings)
    record = json.loads(path.read_text())
    record["settings"].pop("pool")
    record["settings"].pop("decode")  # made before --pool and --decode: mean pooling, words through the unembedding
    path.write_text(json.dumps(record))
    with pytest.raises(MMConceptsError, match="it was made with (pool='mean', not 'max'|decode='effect', not 'auto')"):
        run_benchmark(settings, out)
    with pytest.raises(MMConceptsError, match="it was made with decode='effect', not 'auto'"):
        run_benchmark(replace(settings, pool="mean"), out)
