"""One flag, one meaning: the same model options on every command that loads a model, a help line for every
option, layers written as the README writes them (``--layers -1,norm``), and one-line errors for the rest."""

import argparse
import json

import pytest

from mmconcepts.cli import build_parser, main
from tests.fixtures.datasets import write_images_dataset

MODEL_OPTIONS = {"--model", "--model-dtype", "--device", "--device-map", "--revision", "--trust-remote-code"}
LOADS_A_MODEL = ("info", "extract", "learn", "explain", "evaluate", "sweep", "score-captions")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_option_of_every_command_has_a_help_line():
    for name, parser in _subcommands().items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings} has no help"


@pytest.mark.parametrize("command", LOADS_A_MODEL)
def test_every_command_that_loads_a_model_has_the_same_model_options(command):
    options = _options(_subcommands()[command])
    assert MODEL_OPTIONS <= set(options), MODEL_OPTIONS - set(options)
    assert options["--model-dtype"].choices == ("float32", "bfloat16", "float16")
    assert options["--device-map"].choices == ("auto",)
    assert "--dtype" not in options or "storage" in options["--dtype"].help  # --dtype is only ever storage


def test_flags_mean_one_thing_everywhere():
    commands = _subcommands()
    for name, parser in commands.items():
        options = _options(parser)
        if "--concepts" in options:  # always a folder
            assert options["--concepts"].metavar == "DIR" and options["--concepts"].type is None, name
        if "--n-concepts" in options:  # always K (the benchmark's: one K or several, comma-separated)
            assert "-k" in options and options["--n-concepts"].type("7") in (7, (7,)), name
        if "--features" in options:  # always the store a command learns from
            assert "learn" in options["--features"].help, name
    assert "--test-features" in _options(commands["evaluate"]) and "--features" not in _options(commands["evaluate"])


def test_old_flags_are_one_line_errors(capsys):
    assert main(["learn", "--features", "x", "--concepts", "5", "--out", "y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--concepts" in err[0]
    assert main(["evaluate", "--concepts", "c", "--features", "t", "--out", "o"]) == 2
    assert "--test-features" in capsys.readouterr().err
    assert main(["info", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_layers_are_read_as_written(tiny_llava_dir, tmp_path, capsys):
    data = write_images_dataset(tmp_path / "data", n=6)
    common = ["--model", str(tiny_llava_dir), "--data", str(data), "--token", "dog", "--mode", "teacher",
              "--dtype", "float32", "--quiet"]
    assert main(["extract", *common, "--layers", "-1,norm", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["layers"] == ["2", "norm"]
    assert main(["extract", *common, "--layers", "-3", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["layers"] == ["0"]
    assert main(["learn", "--features", str(tmp_path / "a"), "--layer", "-1", "-k", "2", "--no-ground",
                 "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["layer"] == "2"
    capsys.readouterr()
    # out of range: one line, never wrapped around, nothing written
    for argv, message in [
        (["extract", *common, "--layers", "3", "--out", str(tmp_path / "d")], "unknown layer '3'"),
        (["extract", *common, "--layers", "-4,norm", "--out", str(tmp_path / "d")], "unknown layer '-4'"),
        (["learn", "--features", str(tmp_path / "a"), "--layer", "-4", "--out", str(tmp_path / "d")],
         "layer '-4' is not in this feature store"),
        (["sweep", "--features", str(tmp_path / "a"), "--test-features", str(tmp_path / "a"), "--layers", "5",
          "--out", str(tmp_path / "d")], "layer '5' is not in this feature store"),
        (["sweep", "--features", str(tmp_path / "a"), "--test-features", str(tmp_path / "b"), "--layers", "-1",
          "--out", str(tmp_path / "d")], "layer '2' is not in the test store"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
        assert not (tmp_path / "d").exists()
