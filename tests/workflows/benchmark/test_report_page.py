"""The benchmark page from a hand-made benchmark of two K: self-contained, escaped, the plot against K."""

from mmconcepts.workflows.benchmark.summary import summarize
from mmconcepts.report.benchmark_page import build_benchmark_report


class _Settings:
    tokens, seeds, methods = ("circle", "<b>star</b>"), (0, 1), ("a", "b")
    baselines, n_concepts = ("rnd-words",), (5, 10)
    method_names = methods

    def to_json(self):
        return {"tokens": list(self.tokens), "seeds": list(self.seeds), "methods": list(self.methods),
                "baselines": list(self.baselines), "n_concepts": list(self.n_concepts), "n_train": 10,
                "n_test": 5, "data": None, "test_data": None, "layer": "norm", "model": {"model": None}}


def test_the_page_has_the_table_per_k_the_plot_and_escapes_data(tmp_path):
    runs = []
    for k in (5, 10):
        for token in _Settings.tokens:
            for seed in (0, 1):
                for method, level in (("a", 0.9), ("b", 0.6)):
                    runs.append({"token": token, "seed": seed, "n_concepts": k, "method": method,
                                 "metrics": {"grounding_precision_top1": level + 0.01 * seed + 0.001 * k,
                                             "overlap": 0.1 * seed}})
                runs.append({"token": token, "seed": seed, "n_concepts": k, "method": "baselines",
                             "baselines": {"rnd-words": {"grounding_precision_top1": 0.0}}})
    result = summarize(runs, _Settings())
    html = build_benchmark_report(result, tmp_path / "benchmark.html").read_text()
    assert "default-src 'none'" in html and "<script" not in html
    assert '<section id="k5">' in html and '<section id="k10">' in html and 'id="against-k"' in html
    assert html.count("data:image/png;base64,") == 1
    assert "&lt;b&gt;star&lt;/b&gt;" in html and "<b>star</b>" not in html
    assert "a</b> highest" not in html and "<b>grounding_precision_top1</b>: a highest" in html
