"""An SAE written by SAELens itself runs through the benchmark as a method (``import:PATH``), next to learnt
ones (Semi-NMF and the registry's SAE variants), with the fidelity and naming columns; ``import:`` entries are
checked before anything is written."""

import json

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.workflows.benchmark import BenchmarkSettings, run_benchmark
from mmconcepts.workflows.benchmark.tables import markdown
from tests.exchange import exchange_helpers

D_SAE = 12  # not the cell's K: an imported SAE keeps its own
VARIANTS = ("relu-sae", "batchtopk-sae", "jumprelu-sae", "matryoshka-sae")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A tiny benchmark (1 token, 1 seed, K = 4) of semi-nmf, a SAELens TopK SAE and the SAE variants, with
    fidelity and names."""
    import torch

    from mmconcepts.models.options import ModelOptions

    root = tmp_path_factory.mktemp("bench-import")
    d_in = ModelOptions().load().hidden_size  # the embedded captioner's: the SAE reads its states
    exchange_helpers.saelens(root / "lens-sae", "topk", d_in, D_SAE, k=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        methods = ("semi-nmf", f"import:{root / 'lens-sae'}", *VARIANTS)
        settings = BenchmarkSettings(tokens=("circle",), seeds=(0,), methods=methods, n_concepts=(4,),
                                     n_train=60, n_test=16, baselines=(), extended=False, fidelity=True,
                                     autointerp=True)
        result = run_benchmark(settings, root / "b", log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "settings": settings, "result": result}


@pytest.mark.slow
def test_the_imported_sae_is_a_row_of_the_summary(imported):
    result, root = imported["result"], imported["root"]
    assert result["methods"] == ["semi-nmf", "import:lens-sae", *VARIANTS] and result["skipped"] == []
    assert list(result["summary"]) == result["methods"]
    run = next(r for r in result["runs"] if r["method"] == "import:lens-sae")
    assert run["n_concepts"] == 4 and run["imported"]["d_sae"] == D_SAE and run["imported"]["method"] == "topk-sae"
    assert run["imported"]["source"] == str((root / "lens-sae").resolve()) and "import" in run["seconds"]
    concepts = root / "b" / "work" / "circle" / "seed0" / "k4" / "import-lens-sae" / "concepts"
    summary = json.loads((concepts / "summary.json").read_text())
    assert summary["n_concepts"] == D_SAE and summary["imported_from"]["layout"] == "saelens"
    assert (concepts / "grounding.json").is_file()
    learnt, lens = result["summary"]["semi-nmf"], result["summary"]["import:lens-sae"]
    assert set(lens) == set(learnt) and "grounding_precision_top1" in lens
    for variant in VARIANTS:  # the registry's SAEs are methods like the others
        assert set(result["summary"][variant]) == set(learnt)
        learnt_summary = concepts.parents[1] / variant / "concepts" / "summary.json"
        assert json.loads(learnt_summary.read_text())["method"] == variant
    assert "| metric | semi-nmf | import:lens-sae |" in (root / "b" / "benchmark.md").read_text()
    assert "import:lens-sae" in (root / "b" / "benchmark.html").read_text()


@pytest.mark.slow
def test_fidelity_and_naming_columns_are_metrics_like_the_others(imported):
    result = imported["result"]
    for method in result["methods"]:
        run = next(r for r in result["runs"] if r["method"] == method)
        eval_json = json.loads((imported["root"] / "b" / "work" / "circle" / "seed0" / "k4" /
                                method.replace(":", "-") / "eval" / "metrics.json").read_text())
        row = eval_json["fidelity"]["methods"][eval_json["main_method"]]
        numbers = {f"fidelity_{k}": v for k, v in row.items() if isinstance(v, (int, float))}
        assert numbers and {k: run["metrics"][k] for k in numbers} == numbers
        assert {"name_truth", "word_truth", "name_detection", "word_detection"} <= set(run["metrics"])
        assert result["summary"][method]["fidelity_explained_variance"]["n"] == 1
    assert result["apart"]["4"]["fidelity_kl_divergence"]["lower_is_better"]
    assert "fidelity_l0" not in result["apart"]["4"]  # sparser is not better
    lines = markdown(result).splitlines()
    assert any(line.startswith("| fidelity_kl_divergence |") for line in lines)
    assert any(line.startswith("| name_truth |") for line in lines)


def test_import_entries_are_checked(tmp_path):
    with pytest.raises(MMConceptsError, match="no SAE folder at"):
        BenchmarkSettings(methods=("semi-nmf", f"import:{tmp_path / 'missing'}"))
    with pytest.raises(MMConceptsError, match="names no folder"):
        BenchmarkSettings(methods=("import:",))
    for name in ("a", "b"):
        (tmp_path / name / "sae").mkdir(parents=True)
    with pytest.raises(MMConceptsError, match="both named 'import:sae'"):
        BenchmarkSettings(methods=(f"import:{tmp_path / 'a' / 'sae'}", f"import:{tmp_path / 'b' / 'sae'}"))
    s = BenchmarkSettings(methods=(f"import:{tmp_path / 'a' / 'sae'}", "relu-sae", "matryoshka-sae"))
    assert s.methods[0] == f"import:{(tmp_path / 'a' / 'sae').resolve()}" and s.main_method == s.methods[0]
    assert s.method_names == ("import:sae", "relu-sae", "matryoshka-sae")


def test_a_missing_import_folder_is_a_one_line_error_at_the_command_line(tmp_path, capsys):
    assert main(["benchmark", "--out", str(tmp_path / "b"), "--methods", f"semi-nmf,import:{tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no SAE folder at" in err[0] and not (tmp_path / "b").exists()
