"""The docstring examples of ``src/mmconcepts`` run in the README's test command (pyproject's pytest options:
``--doctest-modules`` over ``src/mmconcepts``; ``conftest.py`` runs each in a temp folder), and they run rather
than being skipped (issue 22: at least 60 docstrings with examples that run, at most 5 skipped)."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import mmconcepts

ROOT = Path(__file__).resolve().parent.parent
#: Modules that are not imported to collect examples (the root conftest's ``collect_ignore``).
NOT_IMPORTED = {"mmconcepts.__main__", "mmconcepts.decompose._hals_triton"}


def _docstrings_with_examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found = []
    for info in pkgutil.walk_packages(mmconcepts.__path__, "mmconcepts."):
        if info.name not in NOT_IMPORTED:
            found += [test for test in finder.find(importlib.import_module(info.name)) if test.examples]
    return found


def test_the_test_command_collects_the_package_examples():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'testpaths = ["tests", "src/mmconcepts"]' in text and 'addopts = "--doctest-modules"' in text
    spec = importlib.util.spec_from_file_location("_root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    ignored = {p.removeprefix("src/").removesuffix(".py").replace("/", ".") for p in root_conftest.collect_ignore}
    assert ignored == NOT_IMPORTED


def test_docstring_examples_run_rather_than_skip():
    tests = _docstrings_with_examples()
    skipped = [t.name for t in tests if all(e.options.get(doctest.SKIP) for e in t.examples)]
    assert len(tests) - len(skipped) >= 60, f"{len(tests) - len(skipped)} docstrings with examples that run"
    assert len(skipped) <= 5, f"docstrings whose every example is skipped: {skipped}"
