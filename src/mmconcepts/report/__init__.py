"""The self-contained HTML report of a concepts folder and its evaluation (``mmconcepts report``)."""

from __future__ import annotations

from mmconcepts.report.html import build_report

__all__ = ["build_report"]
