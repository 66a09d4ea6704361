"""The demo end to end on the shipped model, as the README runs it (run once for the module), and the README's
table of its numbers pinned to what it writes."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from mmconcepts.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
#: The README table's columns: the metrics the demo prints under those headers.
README_COLUMNS = {"grounding precision@1": "grounding_precision_top1", "precision@3": "grounding_precision_top3",
                  "coverage": "coverage", "overlap": "overlap"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``mmconcepts demo`` with its defaults (the size the README reports): (exit code, folder, printed)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--quiet"])
    return code, out, printed.getvalue()


def _key(name: str) -> str:
    """A row's name as a key: its letters and digits, lower-cased (``"K-Means"`` and ``"kmeans"`` agree)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def readme_demo_section() -> str:
    """The README's "What the demo does", up to its first sub-section (the benchmark's findings)."""
    text = README.read_text()
    start = text.index("## What the demo does")
    return text[start:text.index("\n#", start + 1)]


def readme_demo_table() -> dict[str, dict[str, str]]:
    """The README's table of the demo's numbers: ``{row key: {metric: cell}}`` (bold marks dropped; a row
    named ``"PCA (both sides: ...)"`` is ``"pca"``)."""
    lines = [ln for ln in readme_demo_section().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    metrics = [README_COLUMNS[h] for h in header[1:]]
    table = {}
    for line in lines[2:]:
        name, *cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        table[_key(name.split(" (")[0])] = dict(zip(metrics, cells))
    return table


def demo_table(metrics: dict) -> dict[str, dict[str, str]]:
    """The same cells from the demo's ``metrics.json``, formatted as the demo prints them (``–``: absent);
    the rows that have any of the README's metrics."""
    rows = {**metrics["methods"], **metrics["baselines"]}
    table = {}
    for name, row in rows.items():
        if any(row.get(m) is not None for m in README_COLUMNS.values()):
            table[_key(name)] = {m: f"{row[m]:.3f}" if row.get(m) is not None else "–"
                                 for m in README_COLUMNS.values()}
    return table


def test_readme_table_parses():
    table = readme_demo_table()
    assert {"seminmf", "pca", "kmeans", "simple", "rndwords", "noiseimgs", "gtcaptions"} <= set(table)
    assert all(set(row) == set(README_COLUMNS.values()) for row in table.values())


@pytest.mark.slow
def test_demo_writes_report_metrics_and_dictionary(demo):
    code, out, printed = demo
    assert code == 0
    assert "report:" in printed and "semi-nmf" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["token"] == "circle" and metrics["n_concepts"] == 20
    assert set(metrics["methods"]) == {"semi-nmf", "pca", "kmeans", "simple"}
    assert set(metrics["baselines"]) == {"rnd-words", "noise-imgs", "gt-captions", "centred-direction",
                                          "random-direction", "diffmean"}
    for row in metrics["methods"].values():
        assert {"grounding_precision_top1", "coverage", "overlap"} <= set(row)
    assert {"shape", "colour", "size", "position", "exact"} <= set(metrics["caption_accuracy"])
    # the shipped captioner's concepts read as words that are true of the images they explain
    # (about 0.98; random words from its 2,048-word vocabulary are almost never true)
    semi, methods, base = metrics["methods"]["semi-nmf"], metrics["methods"], metrics["baselines"]
    assert semi["grounding_precision_top1"] >= 0.85 and base["rnd-words"]["grounding_precision_top1"] <= 0.1
    assert semi["grounding_precision_top1"] >= methods["simple"]["grounding_precision_top1"] + 0.2
    assert semi["overlap"] <= 0.15 and semi["overlap"] < methods["simple"]["overlap"]
    assert semi["coverage"] >= 0.6
    # the causal evaluation ran: the concepts steer the captions far more often than random directions do
    assert {"steering_success", "ablation_success", "specificity", "fluency"} <= set(semi)
    assert "steering_success" not in methods["pca"]  # the demo steers with its Semi-NMF concepts only
    assert semi["steering_success"] >= 0.3 >= 0.1 >= base["random-direction"]["steering_success"]
    assert base["diffmean"]["steering_success"] >= 0.5 and semi["fluency"] >= 0.8
    causal = json.loads((out / "eval" / "causal.json").read_text())["methods"]["semi-nmf"]
    assert set(causal) == {"concept", "centred", "random", "diffmean"} and causal["concept"]["n_images"] == 30
    assert causal["concept"]["examples"] and all((out / "eval" / e["image"]).is_file()
                                                 for e in causal["concept"]["examples"])
    # the attribution maps of the top-1 concepts point at the circle far more often than a random patch does
    maps = metrics["heatmaps"]
    assert maps["methods"]["attribution"]["pointing_game"] >= 0.6 >= maps["baselines"]["random-patch"]["pointing_game"]
    html = (out / "report.html").read_text()
    assert 'id="steering"' in html and html.count('class="card steer-card"') == causal["concept"]["n_concepts"]
    assert "<html" in html and "circle" in html and "data:image/png;base64" in html
    assert (out / "concepts" / "dictionary.safetensors").is_file()
    # a second run refuses to overwrite without --overwrite
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--out", str(out), "--quiet"]) == 2


@pytest.mark.slow
def test_readme_shows_the_demos_numbers(demo):
    """The README's "What the demo does" prints the demo's table, sizes and sample counts as the demo makes
    them (same seed, same numbers): a change of the demo's numbers fails here until the README follows."""
    code, out, printed = demo
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert readme_demo_table() == demo_table(metrics)
    for key, row in demo_table(metrics).items():  # and the demo prints those cells
        line = next(ln for ln in printed.splitlines() if _key(ln.split()[0] if ln.split() else "") == key)
        assert line.split()[1:len(README_COLUMNS) + 1] == list(row.values())
    sizes = re.search(r"K = (\d+), ([\d,]+) training and ([\d,]+) test images, (\d+)\s*/\s*(\d+) samples",
                      readme_demo_section())
    k, n_train_images, n_test_images, n_train, n_test = (int(g.replace(",", "")) for g in sizes.groups())
    data = out / "data"
    assert (k, n_train, n_test) == (metrics["n_concepts"], metrics["n_train"], metrics["n_test"])
    assert n_train_images == len((data / "train" / "captions.jsonl").read_text().splitlines())
    assert n_test_images == len((data / "test" / "captions.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_the_demo_with_image_tokens_learns_them_and_traces_the_word_concepts(tmp_path, capsys):
    """``demo --image-tokens``: image-token concepts read by their captions and scored per patch, the word concepts
    traced to them, the report's trace section, and the headline lines, from the folders it wrote."""
    from mmconcepts.concepts.concept_set import load_concepts

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--image-tokens", "--n-train", "120", "--n-test", "40",
                 "--no-causal"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    image = metrics["image_tokens"]
    evaluated = json.loads((out / "image-eval" / "metrics.json").read_text())
    assert image["semi-nmf"] == {k: evaluated["methods"]["semi-nmf"][k]
                                 for k in ("grounding_precision_top1", "patch_precision", "pointing")}
    assert image["random-direction"]["pointing"] == evaluated["baselines"]["random-direction"]["pointing"]
    concepts = load_concepts(out / "image-concepts")
    assert concepts.positions == "image" and concepts.summary["layer"] == "0"
    assert concepts.grounding["decode"] == "caption"
    trace = json.loads((out / "trace" / "trace.json").read_text())
    assert trace["pair"] == "word->image" and 0 < trace["n_images"] == len(trace["images"]) <= 20
    assert image["trace_agreement"] == trace["agreement"]
    assert "<h2>Traced to the image tokens</h2>" in (out / "report.html").read_text()
    assert f"pointing {image['semi-nmf']['pointing']:.3f}" in printed
    assert f"for {trace['agreement']['agree']} of {trace['agreement']['n']} word concepts" in printed
    assert "image tokens + trace" in metrics["timings_s"]
