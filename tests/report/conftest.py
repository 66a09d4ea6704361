"""Fixtures of the report tests: the fake folders (report_data.py) and the report built from them once."""

from __future__ import annotations

import pytest
from report_data import make_folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("report-data"))


@pytest.fixture(scope="module")
def report(folders, tmp_path_factory):
    from mmconcepts.report import build_report

    out = tmp_path_factory.mktemp("report-out") / "report.html"
    path = build_report(*folders, out=out, n_explanations=2)
    return path, path.read_text(encoding="utf-8")
