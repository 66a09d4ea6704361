"""The method registry: one explicit table, read without torch, classes imported when first used."""

import subprocess
import sys

import pytest

from mmconcepts.decompose import ConceptDictionary, METHODS
from mmconcepts.decompose.registry import BUILTIN, METHOD_NAMES, Method, MethodRegistry, method_class
from mmconcepts.errors import MMConceptsError


def test_the_registry_and_the_command_line_read_no_torch():
    code = ("import sys, mmconcepts.decompose as d, mmconcepts.cli.learn as c; "
            "print(c.METHOD_NAMES == d.METHOD_NAMES, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_every_builtin_class_carries_its_name_and_lives_where_the_table_says():
    for name, method in BUILTIN.items():
        cls = method_class(name)
        assert cls.method == name and f"{cls.__module__}:{cls.__qualname__}" == method.target
        assert cls is METHODS[name] and method.summary and "\n" not in method.summary
    assert tuple(METHODS) == METHOD_NAMES


def test_a_registry_keeps_builtins_and_drops_registered_classes():
    registry = MethodRegistry({"pca": Method("mmconcepts.decompose.pca:PCA", "principal directions")})
    assert "pca" in registry and "ica" not in registry and ["x"] not in registry and len(registry) == 1
    with pytest.raises(KeyError):
        registry["ica"]
    own = type("Own", (), {})
    registry["mine:Own"] = own
    assert list(registry) == ["pca", "mine:Own"] and registry["mine:Own"] is own
    with pytest.raises(MMConceptsError, match="'pca' is a built-in method"):
        del registry["pca"]
    with pytest.raises(MMConceptsError, match="'pca' is taken by mmconcepts.decompose.pca.PCA"):
        registry["pca"] = own
    with pytest.raises(MMConceptsError, match="'mine:Own' is taken by"):
        registry["mine:Own"] = type("Other", (), {})
    del registry["mine:Own"]
    assert list(registry) == ["pca"]


def test_defining_a_class_registers_nothing():
    type("Unlisted", (ConceptDictionary,), {"method": "unlisted"})
    assert "unlisted" not in METHODS
    with pytest.raises(MMConceptsError, match="unknown method 'unlisted'"):
        method_class("unlisted")


def test_the_package_reads_classes_when_first_used():
    import mmconcepts.decompose as pkg

    assert pkg.KMeans is method_class("kmeans") and "TopKSAE" in dir(pkg)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        pkg.Nothing


def test_the_package_documents_the_table_in_its_order():
    import re

    import mmconcepts.decompose as pkg

    rows = re.findall(r"^``([\w-]+)``\s+:class:`(\w+)`", pkg.__doc__, re.M)
    assert rows == [(name, method.class_name) for name, method in BUILTIN.items()]
