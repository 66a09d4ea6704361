import subprocess
import sys

from mmconcepts.cli import COMMANDS, build_parser, main


def test_help_lists_every_stage(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name.replace("_", "-") in out


def test_every_subcommand_has_help():
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert names == {c.replace("_", "-") for c in COMMANDS}


def test_python_dash_m_help_runs():
    result = subprocess.run([sys.executable, "-m", "mmconcepts", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "extract" in result.stdout
