"""The report's "Steering and ablation" section, read from an evaluation folder's causal.json."""

from __future__ import annotations

import json
import re

import pytest
from report_data import SCRIPT, make_folders

from mmconcepts.errors import MMConceptsError
from mmconcepts.report import build_report


def _causal(images) -> dict:
    def example(k, mode, i, before, after, success):
        return {"concept": k, "words": ["red"], "target": ["colour", "red"], "mode": mode,
                "image": str(images[i]), "before": before, "after": after, "success": success}

    concept_rows = [{"concept": 0, "words": ["red", "crimson"], "target": ["colour", "red"], "strength": 1.5,
                     "steering_success": 0.75, "ablation_success": 0.25},
                    {"concept": 2, "words": ["green"], "target": ["colour", "green"], "strength": 2.0,
                     "steering_success": 0.5}]
    return {"format_version": 2, "methods": {"semi-nmf": {
        "concept": {"steering_success": 0.625, "ablation_success": 0.25, "specificity": 0.9, "fluency": 0.97,
                    "layer": "norm", "positions": "token", "strength_factor": 16.0, "n_images": 60,
                    "concepts": concept_rows,
                    "examples": [example(0, "add", 1, "one blue square", "one red square", True),
                                 example(0, "ablate", 0, "one red circle", "one red circle", False),
                                 example(2, "add", 2, SCRIPT, "one green triangle", True)]},
        "diffmean": {"steering_success": 0.875, "fluency": 0.95, "concepts": [
            {"concept": 0, "steering_success": 0.9}, {"concept": 2, "steering_success": 0.85}], "examples": []},
        "random": {"steering_success": 0.0, "fluency": 1.0, "concepts": [
            {"concept": 0, "steering_success": 0.0}], "examples": []}}}}


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    cdir, edir = make_folders(root)
    (edir / "causal.json").write_text(json.dumps(_causal(sorted((root / "images").glob("*.png")))))
    return root, cdir, edir, build_report(cdir, edir, out=root / "report.html").read_text()


def test_section_lists_each_concept_with_its_caption_pairs(steered):
    _, _, _, html = steered
    assert 'id="steering"' in html and 'href="#steering"' in html
    section = html[html.index('id="steering"'):html.index('id="explanations"')]
    # the summary: one row per direction, the concept's own first, the controls as baselines
    summary = section[section.index('<table class="metrics causal-summary">'):section.index("</table>")]
    assert re.findall(r"<tr(?: class=\"baseline\")?><td>([a-z]+)</td>", summary) == ["concept", "diffmean", "random"]
    assert "0.625" in summary and "0.875" in summary
    cards = re.findall(r'<article class="card steer-card">(.*?)</article>', section, re.S)
    assert len(cards) == 2
    first, second = cards
    assert 'href="#concept-0"' in first and "target colour = red" in first
    assert "steer <b>0.75</b>" in first and "ablate <b>0.25</b>" in first and "diffmean 0.90" in first
    assert "random 0</span>" in first and "random" not in second  # a control shown only where it was measured
    assert first.count("<tr class=") == 2 and first.count('src="data:image/') == 2
    assert "one blue square" in first and "one red square" in first and "&#10003;" in first
    assert "(unchanged)" in first and "&#10007;" in first  # the ablation left the caption as it was
    assert "ablate <b>\u2013</b>" in second  # no ablation measured: an en dash, not zero
    assert "&lt;script&gt;" in second and SCRIPT not in html


def test_no_section_without_causal_json(tmp_path):
    cdir, edir = make_folders(tmp_path)
    html = build_report(cdir, edir, out=tmp_path / "r.html").read_text()
    assert 'id="steering"' not in html and 'href="#steering"' not in html


@pytest.mark.parametrize("content, message", [
    ("{oops", "causal.json is not valid JSON"),
    ('{"methods": []}', "causal.json is malformed"),
    ('{"methods": {"semi-nmf": {"random": {}}}}', "has no 'concept' direction"),
    ('{"methods": {"semi-nmf": {"concept": {"concepts": [], "examples": [{"concept": "x"}]}}}}', "integer 'concept'"),
])
def test_bad_causal_json_writes_nothing(tmp_path, content, message):
    cdir, edir = make_folders(tmp_path / "d")
    (edir / "causal.json").write_text(content)
    with pytest.raises(MMConceptsError, match=message) as info:
        build_report(cdir, edir, out=tmp_path / "out" / "r.html")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
