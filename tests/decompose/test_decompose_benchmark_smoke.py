"""The benchmark runs end to end in its reduced smoke form (tiny sizes, one process, not timed)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decompose.py"


def test_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("mmconcepts_bench_decompose", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    solvers = ["ours", "ours-l1", "sklearn"]
    if importlib.util.find_spec("overcomplete") is not None:
        solvers.append("overcomplete")
    rows = bench.main(["--smoke", "--solvers", ",".join(solvers)])
    (row,) = rows
    assert set(row["results"]) == set(solvers)
    for res in row["results"].values():
        assert res["curve"] and 0 < res["final_err"] < 1.5
    assert row["results"]["ours"]["final_err"] <= 1.05 * row["best_err"]
    assert "ours vs sklearn" in capsys.readouterr().out
