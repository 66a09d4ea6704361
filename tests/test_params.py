"""Settings own their flags: every declared field of every settings class is its command's flag, with the
dataclass's default in the help and after parsing (what stops the command line and the library drifting
apart), and a refused value is one line, exit status 2 at the command line and an MMConceptsError in the
library."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import pytest

from mmconcepts.attribution.settings import MapSettings
from mmconcepts.cli import build_parser, main
from mmconcepts.concepts.settings import GroundingSettings
from mmconcepts.decompose.settings import LearnSettings
from mmconcepts.errors import MMConceptsError
from mmconcepts.evaluation.settings import EvaluationSettings
from mmconcepts.extract.settings import ExtractionSettings
from mmconcepts.models.options import ModelOptions
from mmconcepts.params import (Boolean, Interval, Many, Options, Text, add_arguments, declared, default_of,
                               from_args, param, positive_int, settings_from, validate)
from mmconcepts.workflows.benchmark.settings import BenchmarkSettings

#: (settings class, command, the command's required arguments, the fields the settings need besides).
CASES = [
    (ExtractionSettings, "extract", ["--data", "d", "--token", "dog", "--out", "o"], {"token": "dog"}),
    (LearnSettings, "learn", ["--features", "f", "--out", "o"], {}),
    (GroundingSettings, "learn", ["--features", "f", "--out", "o"], {}),
    (EvaluationSettings, "evaluate", ["--concepts", "c", "--test-features", "t", "--out", "o"], {}),
    (BenchmarkSettings, "benchmark", [], {}),
    *[(ModelOptions, command, required, {}) for command, required in [
        ("info", []), ("extract", ["--data", "d", "--token", "dog", "--out", "o"]),
        ("learn", ["--features", "f", "--out", "o"]), ("benchmark", []),
        ("evaluate", ["--concepts", "c", "--test-features", "t", "--out", "o"])]],
]
IDS = [f"{cls.__name__}-{command}" for cls, command, _, _ in CASES]
#: Fields whose flag the command writes itself (the registry's names are its type).
HAND_WRITTEN = {(LearnSettings, "method")}


def _parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _flagged(cls):
    return [(f, p) for f, p in declared(cls) if p.flag and (cls, f.name) not in HAND_WRITTEN]


def _shown(default) -> str:
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    if isinstance(default, str) and len(default.split()) > 1:
        return repr(default)
    return ("on" if default else "off") if isinstance(default, bool) else str(default)


@pytest.mark.parametrize("cls, command, required, needed", CASES, ids=IDS)
def test_every_flag_is_in_the_help_with_the_dataclass_default(cls, command, required, needed):
    parser = _parser(command)
    text = " ".join(parser.format_help().split())  # argparse wraps lines anywhere
    by_dest = {a.dest: a for a in parser._actions}
    for f, p in _flagged(cls):
        flag = "--" + f.name.replace("_", "-") if p.flag is True else p.flag
        action = by_dest[f.name]
        assert flag in action.option_strings and flag in text, (command, flag)
        default = default_of(cls, f.name)
        if f.name in needed:
            continue  # required on the command line: no default
        help_text = " ".join(action.help.replace("%%", "%").split())
        if p.shown is not None:  # the default in words (the command may say it its own way)
            assert "(default: " in help_text and (default is None or str(default) in help_text), (command, flag)
        elif default is not None:
            assert f"(default {_shown(default)})" in help_text, (command, flag, help_text)


@pytest.mark.parametrize("cls, command, required, needed", CASES, ids=IDS)
def test_a_parsed_default_is_the_dataclass_default(cls, command, required, needed):
    """The test that stops drift: what the command runs with when no flag is given is what the library
    runs with when no keyword is given."""
    args = _parser(command).parse_args(required)
    extra = {"also": ()} if cls is ExtractionSettings else {}  # --also starts from a list argparse appends to
    extra |= {"model": ModelOptions()} if cls is BenchmarkSettings else {}
    assert from_args(cls, args, **extra) == cls(**needed)
    for f, _ in _flagged(cls):
        if f.name not in needed and f.name not in extra:
            assert getattr(args, f.name) == default_of(cls, f.name), f.name


def test_the_num_workers_default_is_said_once():
    """``--num-workers`` used to default to 2 on the command line and to 0 in ExtractionSettings."""
    args = _parser("extract").parse_args(["--data", "d", "--token", "dog", "--out", "o"])
    assert args.num_workers == ExtractionSettings(token="dog").num_workers == 0


def _bad_values(constraint):
    """(library value, command-line text) refused by ``constraint``; ``None``: none to give that way."""
    if isinstance(constraint, Interval):
        low = constraint.low if constraint.low is not None else 0
        bad = low - 1 if constraint.kind is int else low - 0.5
        return bad, str(bad)
    if isinstance(constraint, Options):
        return "bogus", "bogus"
    if isinstance(constraint, Boolean):
        return "yes", None
    if isinstance(constraint, Text):
        return ("two words" if constraint.word else ""), None
    if isinstance(constraint, Many):
        item, text = _bad_values(constraint.item)
        return (item,), text
    return None, None


def _checked():
    cases = []
    for cls, command, required, needed in CASES[:6] + [(MapSettings, None, None, {})]:
        for f, p in declared(cls):
            if p.constraint is not None:
                cases.append((cls, command, required, needed, f.name, p))
    return cases


CHECKED = _checked()


@pytest.mark.parametrize("cls, command, required, needed, name, declared_param", CHECKED,
                         ids=[f"{c[0].__name__}.{c[4]}" for c in CHECKED])
def test_a_refused_value_is_one_line_in_the_library_and_at_the_command_line(cls, command, required, needed,
                                                                            name, declared_param, capsys):
    value, text = _bad_values(declared_param.constraint)
    with pytest.raises(MMConceptsError) as info:
        cls(**{**needed, name: value})
    message = str(info.value)
    assert "\n" not in message and (name in message or repr(value) in message or repr(value[0]) in message), message
    if command is None or text is None or not declared_param.flag or (cls, name) in HAND_WRITTEN:
        return
    flag = "--" + name.replace("_", "-") if declared_param.flag is True else declared_param.flag
    assert main([command, *required, f"{flag}={text}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err


def test_map_settings_refuse_with_their_own_words():
    with pytest.raises(MMConceptsError, match=r"^unknown heatmap method 'saliency': choose attribution, occlusion"):
        MapSettings("saliency")
    with pytest.raises(MMConceptsError, match=r"^steps must be an integer >= 0, got -1$"):
        MapSettings(steps=-1)
    methods = dict(declared(MapSettings))[MapSettings.__dataclass_fields__["method"]].constraint.values
    assert _parser("explain")._option_string_actions["--heatmaps"].choices == methods
    assert _parser("evaluate")._option_string_actions["--heatmaps"].const == methods


# ---- the parameter declarations themselves -------------------------------------------------------------------
@dataclass(frozen=True)
class _Toy:
    count: int = param(3, help="how many", constraint=Interval(int, 1))
    share: float | None = param(None, help="how much", constraint=Interval(float, 0, 1, closed="left"),
                                optional=True, shown="all of it")
    names: tuple = param(("a",), help="which", constraint=Many(Text(word=True)), short="-n")
    fast: bool = param(True, help="run fast", constraint=Boolean())
    hidden: int = param(0, help="library only", constraint=Interval(int, 0), flag=None)

    def __post_init__(self):
        validate(self)


def test_validate_names_the_field_and_its_flag_and_normalises_lists():
    assert _Toy(names=["a", "b"]).names == ("a", "b") and _Toy(names="c").names == ("c",)
    assert _Toy(share=None).share is None and _Toy(share=0).share == 0
    for kwargs, message in [
        ({"count": 0}, "count (--count) must be an integer >= 1, got 0"),
        ({"count": True}, "count (--count) must be an integer >= 1, got True"),
        ({"count": 2.0}, "count (--count) must be an integer >= 1, got 2.0"),
        ({"share": 1.0}, "share (--share) must be a number in [0, 1) or None, got 1.0"),
        ({"share": float("nan")}, "share (--share) must be a number in [0, 1) or None, got nan"),
        ({"names": ("a", "a")}, "names (--names) must be distinct single words, got ('a', 'a')"),
        ({"names": ()}, "names (--names) must be distinct single words, got ()"),
        ({"fast": 1}, "fast (--fast) must be true or false, got 1"),
        ({"hidden": -1}, "hidden must be an integer >= 0, got -1"),
    ]:
        with pytest.raises(MMConceptsError, match="^" + re.escape(message) + "$"):
            _Toy(**kwargs)


def test_generated_options_read_and_refuse_as_declared():
    parser = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    add_arguments(parser, _Toy, shown={"count": "three"})
    options = {s: a for a in parser._actions for s in a.option_strings}
    assert "--hidden" not in options and options["-n"] is options["--names"]
    assert options["--count"].type == positive_int and options["--count"].help == "how many (default: three)"
    assert options["--share"].help == "how much (default: all of it)"
    assert options["--no-fast"] is options["--fast"]  # on by default: --fast / --no-fast
    assert from_args(_Toy, parser.parse_args(["-n", "x, y", "--share", "0.5", "--no-fast"])) == _Toy(
        names=("x", "y"), share=0.5, fast=False)
    for argv in (["--count", "0"], ["--count", "x"], ["--share", "1"]):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(argv)
    exclude = argparse.ArgumentParser()
    add_arguments(exclude, _Toy, exclude=("names",))
    assert "--names" not in exclude.format_help()


def test_settings_or_keywords_not_both():
    assert settings_from(_Toy, None, {"count": 5}, "toy") == _Toy(count=5)
    assert settings_from(_Toy, _Toy(count=5), {}, "toy") == _Toy(count=5)
    with pytest.raises(MMConceptsError, match="give the toy settings either as settings= or as keywords, not both"):
        settings_from(_Toy, _Toy(), {"count": 5}, "toy")


def test_learn_settings():
    s = LearnSettings(method="pca", max_iter=7, method_parameters={"solver": "full"})
    assert s.parameters == {"solver": "full", "max_iter": 7} and s.relative_l1_applied is None
    assert LearnSettings().relative_l1_applied == 0.05 and LearnSettings(l1=0.1).relative_l1_applied is None
    with pytest.raises(MMConceptsError, match="give --l1 or --relative-l1, not both"):
        LearnSettings(l1=0.1, relative_l1=0.1)
