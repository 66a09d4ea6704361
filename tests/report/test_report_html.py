"""The HTML report: self-contained, escaped, complete, atomic; bad input raises MMConceptsError."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from report_data import ATTR, SCRIPT, make_folders

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.report import build_report
from mmconcepts.evaluation.grounding.overlap import overlap_matrix
from mmconcepts.report.evaluation_sections import word_overlap
from mmconcepts.report.concept_cards import fmt
from mmconcepts.report.plots import thumbnail

EXTERNAL = re.compile(r"""(?:\b(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?!data:|#)[a-z][a-z0-9+.-]*:"""
                      r"""|\burl\(\s*["']?\s*(?!data:)|@import|//[a-z0-9.-]+\.[a-z]{2,})""", re.I)


def _decode(uri: str):
    from PIL import Image

    header, data = uri.split(",", 1)
    return header, Image.open(io.BytesIO(base64.b64decode(data)))


def test_report_is_self_contained(report):
    path, html = report
    assert path.is_file() and html.startswith("<!doctype html>")
    assert "http://" not in html and "https://" not in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<script" not in html.lower() and "<link rel=\"stylesheet\"" not in html
    for src in re.findall(r'\bsrc="([^"]*)"', html):
        assert src.startswith("data:image/"), src[:40]
    assert "default-src 'none'" in html  # the CSP forbids any request even if something slipped through
    assert not list(path.parent.glob(".*.tmp"))


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's parser would see them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_data_is_escaped(report):
    _, html = report
    assert SCRIPT not in html and ATTR not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;" in html
    parser = _Tags()
    parser.feed(html)
    assert parser.tags and not [t for t, _ in parser.tags if t in ("script", "iframe", "object", "embed", "base")]
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/"), attrs["src"][:40]
    # the payloads survive as text: inside attribute values (alt/title) and element text, never as markup
    assert any(ATTR in (attrs.get("title") or "") for _, attrs in parser.tags)


def test_report_content(report):
    _, html = report
    for section in ("overview", "concepts", "overlap", "metrics", "layers", "explanations"):
        assert f'id="{section}"' in html and f'href="#{section}"' in html
    articles = re.findall(r'<article class="card concept" id="concept-(\d+)">(.*?)</article>', html, re.S)
    assert [int(k) for k, _ in articles] == [0, 1, 2, 3]
    for k, body in articles:
        assert len(re.findall(r'<figure class="thumb">', body)) == 5
        assert 'class="wordbars"' in body and 'class="hist"' in body
        assert f'href="#concept-{k}"' in html  # table of contents
    assert 'class="pixel"' in html  # 64x64 pixel art shown crisp
    assert "(missing: " in html  # the missing file became a placeholder
    assert "mmconcepts/shapesworld-llava" in html and ">semi-nmf<" in html
    # metrics table: methods then baselines, best per column highlighted, absent metrics as an en dash
    table = html[html.index('<table class="metrics">'):html.index("</table>")]
    rows = re.findall(r"<tr class=\"([^\"]*)\">\s*<td>([^<]*)</td>(.*?)</tr>", table, re.S)
    assert [r[1] for r in rows] == ["semi-nmf", "pca", "kmeans", "simple", "rnd-words", "noise-imgs", "gt-captions"]
    assert rows[0][0] == "main" and "baseline" in rows[4][0]
    assert rows[0][2].count('class="best"') == 9
    assert "\u2013" in rows[1][2] and "\u2013" in rows[6][2]
    assert not any('class="best"' in r[2] for r in rows[4:])  # baselines are references, never "best"
    assert "0.080" in rows[0][2]  # overlap: lower is better and semi-nmf's 0.08 is the best
    # local explanations: at most n_explanations; bare image paths get their captions from grounding.json
    explanations = re.findall(r'<article class="card explanation">(.*?)</article>', html, re.S)
    assert len(explanations) == 2
    minis = re.findall(r'<div class="mini">(.*?)</div>', explanations[0], re.S)
    assert len(minis) == 3 and all(m.count("<img") == 3 for m in minis)
    assert 'title="a red circle"' in minis[0]
    assert "0.112" in html  # mean overlap of the overlap.json matrix


def test_report_without_eval(tmp_path):
    cdir, _ = make_folders(tmp_path, with_eval=False)
    html = build_report(cdir, out=tmp_path / "r.html").read_text()
    assert 'id="metrics"' not in html and 'id="layers"' not in html and 'id="explanations"' not in html
    assert "computed from the grounded words" in html
    assert html.count('<article class="card concept"') == 4


def test_eval_fallbacks(tmp_path):
    """Overlap from the words when overlap.json is absent; sweep.png embedded when sweep.json is absent."""
    cdir, edir = make_folders(tmp_path)
    (edir / "overlap.json").unlink()
    (edir / "sweep.json").unlink()
    from PIL import Image

    Image.new("RGB", (40, 20), "white").save(edir / "sweep.png")
    html = build_report(cdir, edir, out=tmp_path / "r.html").read_text()
    assert "computed from the grounded words" in html
    assert 'id="layers"' in html


def test_sweep_reads_the_sweep_command_format(folders, monkeypatch):
    """mmconcepts sweep stores the swept method under its name and rnd-words as a baseline."""
    from mmconcepts.report import evaluation_sections as report_sections
    from mmconcepts.report import plots

    seen = {}

    def fake(layers, metrics, main=None, labels=None, baselines=()):
        seen.update(layers=layers, methods=sorted(metrics), main=main, baselines=set(baselines))
        return "data:image/png;base64,"

    monkeypatch.setattr(plots, "sweep_png", fake)
    assert report_sections._sweep(folders[1], None)["layers"] == ["0", "1", "2", "3", "norm"]
    assert seen["methods"] == ["rnd-words", "semi-nmf"] and seen["main"] == "semi-nmf"
    assert "rnd-words" in seen["baselines"]


def test_word_overlap_and_fmt():
    concepts = [{"words": [{"word": w} for w in ws]} for ws in (["a", "b"], ["b", "c", "d", "e"], [])]
    m = word_overlap(concepts)
    # the convention of overlap.json (evaluate writes it): row k normalised by |T_k|, so the matrix drawn from
    # the words and the one read from an evaluation folder are the same, not transposed
    assert m == overlap_matrix([{"a", "b"}, {"b", "c", "d", "e"}, set()])
    assert m[0][1] == 0.5 and m[1][0] == 0.25 and m[0][0] == 1.0 and m[2][0] == 0.0 and m[0][2] == 0.0
    assert fmt(None) == fmt(float("nan")) == fmt("x" * 0 or None) == "\u2013"
    assert (fmt(0.08), fmt(3.2, 2), fmt(12345), fmt(40), fmt(0)) == ("0.080", "3.20", "12,345", "40", "0")


def test_thumbnails(tmp_path, folders):
    cdir, _ = folders
    images = cdir.parent / "images"
    header, im = _decode(thumbnail(images / "000.png", 192)["src"])
    assert header == "data:image/png;base64" and im.size == (192, 192)  # 64 px upscaled x3, nearest
    assert im.getcolors(16) is not None  # nearest neighbour adds no blended colours
    header, im = _decode(thumbnail(images / "photo.jpg", 192)["src"])
    assert header == "data:image/jpeg;base64" and max(im.size) == 192
    missing = thumbnail(tmp_path / "nope.png", 192)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert missing["missing"] and thumbnail(tmp_path / "bad.png")["missing"] and thumbnail(None)["missing"]
    assert _decode(missing["src"])[1].size == (192, 192)


@pytest.mark.parametrize("breakage, message", [
    ("no-concepts", "does not exist"),
    ("no-grounding", "has no grounding.json"),
    ("corrupt-grounding", "not valid JSON"),
    ("corrupt-metrics", "metrics.json is not valid JSON"),
    ("bad-shape", "malformed"),
    ("no-eval", "evaluation folder"),
])
def test_bad_input_writes_nothing(tmp_path, breakage, message):
    cdir, edir = make_folders(tmp_path / "d")
    if breakage == "no-concepts":
        shutil.rmtree(cdir)
    elif breakage == "no-grounding":
        (cdir / "grounding.json").unlink()
    elif breakage == "corrupt-grounding":
        (cdir / "grounding.json").write_text('{"concepts": [')
    elif breakage == "corrupt-metrics":
        (edir / "metrics.json").write_text("{oops")
    elif breakage == "bad-shape":
        (cdir / "grounding.json").write_text(json.dumps({"concepts": [{"index": "zero"}]}))
    elif breakage == "no-eval":
        shutil.rmtree(edir)
    out = tmp_path / "out" / "report.html"
    with pytest.raises(MMConceptsError, match=message) as info:
        build_report(cdir, edir, out=out)
    assert "\n" not in str(info.value) and ": " in str(info.value)
    assert not (tmp_path / "out").exists()


def test_existing_report_kept_on_error(tmp_path):
    cdir, edir = make_folders(tmp_path / "d")
    out = tmp_path / "report.html"
    out.write_text("old")
    (cdir / "grounding.json").write_text("[")
    with pytest.raises(MMConceptsError):
        build_report(cdir, edir, out=out)
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["d", "report.html"]


def test_cli(tmp_path, folders, capsys):
    cdir, edir = folders
    out = tmp_path / "cli.html"
    assert main(["report", "--concepts", str(cdir), "--eval", str(edir), "--out", str(out),
                 "--n-explanations", "1"]) == 0
    assert out.is_file() and out.read_text().count('class="card explanation"') == 1
    assert str(out) in capsys.readouterr().out
    assert main(["report", "--concepts", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: concepts folder") and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()
