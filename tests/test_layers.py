"""The layout's one rule, checked: data flows one way, so no stage imports a stage after it.

Every ``import`` of every module is read (at the top or inside a function: a lazy import is still a
dependency), and a module of a stage may import only itself, earlier stages and the helpers that serve
every stage (``errors``, ``files``, ``devices``, ``outputs``, ``records``, ``params``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmconcepts

#: The stages in the order data flows through them (docs/ARCHITECTURE.md), then what chains them.
STAGES = ("data", "models", "extract", "decompose", "concepts", "interventions", "attribution", "explanations",
          "exchange", "evaluation", "report", "toy", "workflows", "cli")
ROOT = Path(mmconcepts.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mmconcepts" and len(parts) > 1 else None


def test_every_package_is_a_stage_or_a_helper():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"assets"} <= set(STAGES), f"a package the layout does not name: {packages - set(STAGES)}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_a_later_one(stage):
    later = set(STAGES[STAGES.index(stage) + 1:])
    wrong = {}
    for path in sorted((ROOT / stage).rglob("*.py")) if (ROOT / stage).is_dir() else []:
        bad = sorted(m for m in _imports(path) if _stage(m) in later)
        if bad:
            wrong[str(path.relative_to(ROOT))] = bad
    assert not wrong, f"{stage} imports a later stage: {wrong}"


def test_the_helpers_import_no_stage():
    wrong = {}
    for path in sorted(ROOT.glob("*.py")):
        if path.stem in ("__main__", "__init__"):
            continue
        bad = sorted(m for m in _imports(path) if _stage(m) in STAGES)
        if bad:
            wrong[path.name] = bad
    assert not wrong, f"a helper imports a stage: {wrong}"


def test_test_modules_have_distinct_names():
    """pytest imports the test modules by their base name (no packages under tests/): two files of one name
    stop the whole run at collection."""
    names = {}
    for path in sorted(Path(__file__).resolve().parent.rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(Path(__file__).resolve().parent)))
    twice = {name: paths for name, paths in names.items() if len(paths) > 1}
    assert not twice, f"test modules sharing a name: {twice}"
