"""``mmconcepts benchmark``: every token, several seeds and methods, and the table with confidence intervals.

It sits above the stages, as :mod:`mmconcepts.workflows.demo` does, and chains their public API: ShapesWorld data per
seed, one extraction per data seed for every token, then for each (token, seed, K, method) cell
:func:`~mmconcepts.decompose.learn`, :func:`~mmconcepts.concepts.ground`,
:func:`~mmconcepts.evaluation.evaluate.evaluate` and the extended metrics; :mod:`.summary` turns the cells
into means and 95% intervals, :mod:`.tables` into ``benchmark.md``, and
:mod:`mmconcepts.report.benchmark_page` into ``benchmark.html``.
"""

from mmconcepts.workflows.benchmark.run import read_benchmark, run_benchmark
from mmconcepts.workflows.benchmark.settings import BenchmarkSettings

__all__ = ["BenchmarkSettings", "read_benchmark", "run_benchmark"]
