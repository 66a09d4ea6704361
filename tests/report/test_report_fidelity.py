"""The report's "Fidelity inside the model" section, read from metrics.json's ``fidelity``."""

from __future__ import annotations

import json
import re

import pytest
from report_data import make_folders

from mmconcepts.errors import MMConceptsError
from mmconcepts.report import build_report

FIDELITY = {"layer": "norm", "positions": "token", "n_images": 40, "n_skipped": 2, "n_samples": 42,
            "n_positions": 900, "ce_clean": 0.9, "ce_zero": 7.6, "ce_mean": 5.1, "kl_zero": 6.0, "kl_mean": 4.0,
            "ce_token_mean": 0.2, "kl_token_mean": 1.4,
            "methods": {"pca": {"explained_variance": 0.99, "l0": 20.0, "dead_concepts": 0.0, "kl_divergence": 0.01,
                                "kl_recovered_zero": 0.998, "kl_recovered_mean": 0.9975,
                                "ce_spliced": 0.95, "ce_recovered_zero": 0.99, "ce_recovered_mean": 1.07,
                                "captions_unchanged": 0.95},
                        "semi-nmf": {"explained_variance": 0.94, "l0": 4.0, "dead_concepts": 0.05,
                                     "kl_divergence": 0.04, "kl_recovered_zero": 0.993, "kl_recovered_mean": 0.99,
                                     "ce_spliced": 0.85, "ce_recovered_zero": 1.01,
                                     "ce_recovered_mean": 0.93, "captions_unchanged": 1.0}}}


def _with_fidelity(root, fidelity):
    cdir, edir = make_folders(root)
    metrics = json.loads((edir / "metrics.json").read_text())
    (edir / "metrics.json").write_text(json.dumps({**metrics, "fidelity": fidelity}))
    return cdir, edir


def test_section_has_a_row_per_method_main_first(tmp_path):
    cdir, edir = _with_fidelity(tmp_path, FIDELITY)
    html = build_report(cdir, edir, out=tmp_path / "r.html").read_text()
    assert 'href="#fidelity"' in html
    section = html[html.index('id="fidelity"'):html.index("</section>", html.index('id="fidelity"'))]
    rows = re.findall(r'<tr class="(main)?"><td>([a-z-]+)</td>(.*?)</tr>', section)
    assert [(main, name) for main, name, _ in rows] == [("main", "semi-nmf"), ("", "pca")]
    cells = {name: re.findall(r'<td( class="best")?>([^<]*)</td>', rest) for _, name, rest in rows}
    # closest to 1 is best for the CE recovered (1.07 overshoots), L0 and CE spliced are not ranked
    assert cells["semi-nmf"][8] == (' class="best"', "0.930") and cells["pca"][8] == ("", "1.070")
    assert not any(cells[m][1][0] or cells[m][6][0] for m in cells)
    assert cells["pca"][0] == (' class="best"', "0.990") and cells["semi-nmf"][9] == (' class="best"', "1.000")
    # higher is best for the KL recovered: PCA's splice is the closer to the clean distribution
    assert cells["pca"][5] == (' class="best"', "0.998") and cells["semi-nmf"][5] == ("", "0.990")
    assert "40 test images" in section and "2 whose caption lacks the token" in section and "clean 0.900" in section
    assert "mean-ablated 5.100" in section and "with the mean training feature 0.200" in section
    assert "KL divergence from the clean next-token distribution: zero-ablated 6.000" in section


def test_no_section_without_fidelity(tmp_path):
    cdir, edir = make_folders(tmp_path)
    html = build_report(cdir, edir, out=tmp_path / "r.html").read_text()
    assert 'id="fidelity"' not in html and 'href="#fidelity"' not in html


@pytest.mark.parametrize("fidelity, message", [([], "'fidelity' is not an object"),
                                               ({"methods": {"pca": 3}}, "'fidelity.methods.pca' is not")])
def test_bad_fidelity_writes_nothing(tmp_path, fidelity, message):
    cdir, edir = _with_fidelity(tmp_path, fidelity)
    with pytest.raises(MMConceptsError, match=message):
        build_report(cdir, edir, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
