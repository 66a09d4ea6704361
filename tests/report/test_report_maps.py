"""The report's concept maps (``maps.json`` of ``evaluate --heatmaps``): a second row of map images under a
concept's top images and a map per explained concept, embedded as data URIs in the one file."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from report_data import make_folders

HOT = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]  # top-right cell


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from mmconcepts.report import build_report

    root = tmp_path_factory.mktemp("report-maps")
    cdir, edir = make_folders(root / "data")
    grounding = json.loads((cdir / "grounding.json").read_text())
    expl = json.loads((edir / "explanations.json").read_text())
    first = grounding["concepts"][0]["images"]
    maps = {"method": "attribution",
            "concepts": [{"index": 0, "images": [{"image": im["image"], "grid": HOT, "box": [0, 0, 64, 64]}
                                                 for im in first[:3]]},  # the last two top images: no map
                         {"index": 2, "images": []}],
            "explanations": [{"id": expl[0]["id"], "image": expl[0]["image"],
                              "concepts": [{"index": expl[0]["concepts"][0]["index"], "grid": HOT,
                                            "box": [0, 0, 64, 64]}]}]}
    (edir / "maps.json").write_text(json.dumps(maps))
    out = build_report(cdir, edir, out=root / "report.html", n_explanations=2)
    return out.read_text(encoding="utf-8")


def test_second_row_of_maps_under_the_concept_with_maps(built):
    assert built.count('class="thumbs maps"') == 1  # only concept 0 has maps
    row = built.split('class="thumbs maps"', 1)[1].split("</div>", 1)[0]
    assert row.count("<img ") == 3 and row.count("no map") == 2
    assert "Second row: the concept's attribution map" in built


def test_explanation_shows_its_concept_map(built):
    assert built.count('<img class="map" ') == 1


def test_maps_are_data_uris_drawn_where_the_map_is(built):
    srcs = re.findall(r'src="([^"]*)"', built)
    assert srcs and all(s.startswith("data:") for s in srcs)  # still one self-contained file
    maps = re.findall(r'src="(data:image/png;base64,[^"]+)"[^>]*alt="attribution map', built)
    assert len(maps) == 4  # three in the concept's row, one in the explanation (the last)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(maps[-1].split(",", 1)[1]))).convert("RGB"),
                        dtype=np.float64)
    side = pixels.shape[0]
    colour = pixels.max(axis=2) - pixels.min(axis=2)  # the grey image has none; the map's colours do
    hot = colour[: side // 4, 3 * side // 4:].mean()
    rest = colour[side // 4:, : 3 * side // 4].mean()
    assert hot > 40 and rest < 10


def test_malformed_maps_file_is_one_line(tmp_path):
    from mmconcepts.errors import MMConceptsError
    from mmconcepts.report import build_report

    cdir, edir = make_folders(tmp_path / "data")
    (edir / "maps.json").write_text(json.dumps({"concepts": [{"index": 0, "images": [{"image": "x.png"}]}]}))
    with pytest.raises(MMConceptsError, match="maps.json is malformed") as info:
        build_report(cdir, edir, out=tmp_path / "report.html")
    assert "\n" not in str(info.value) and not (tmp_path / "report.html").exists()
