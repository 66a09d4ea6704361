"""The demo's settings: checked before anything runs, and its command's flags generated from them."""

from __future__ import annotations

import pytest

from mmconcepts.cli import build_parser, main
from mmconcepts.errors import MMConceptsError
from mmconcepts.params import from_args
from mmconcepts.workflows.demo import DemoSettings, run_demo


def test_the_flags_are_the_settings_fields_with_their_defaults():
    args = build_parser().parse_args(["demo"])
    assert from_args(DemoSettings, args) == DemoSettings()
    args = build_parser().parse_args(["demo", "-k", "5", "--no-causal", "--n-train", "7"])
    assert from_args(DemoSettings, args) == DemoSettings(n_concepts=5, causal=False, n_train=7)


def test_a_bad_setting_is_refused_before_any_image_is_drawn(tmp_path, capsys):
    with pytest.raises(MMConceptsError, match="n_test"):
        run_demo(tmp_path / "demo", n_test=0)
    with pytest.raises(MMConceptsError, match="either as settings= or as keywords"):
        run_demo(tmp_path / "demo", DemoSettings(), seed=1)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
