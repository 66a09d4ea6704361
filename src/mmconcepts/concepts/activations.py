"""The training activations of a concepts folder (``activations.safetensors``), dense or sparse.

A folder stores its ``N x K`` activations in one of two forms (docs/FORMAT.md):

- **dense**: one tensor ``"activations"``, ``N x K`` float32 (what ``mmconcepts learn`` writes);
- **sparse** (compressed sparse rows): ``"crow_indices"`` (``N + 1`` int64), ``"col_indices"`` (``nnz`` int64),
  ``"values"`` (``nnz`` float32) and ``"shape"`` (``[N, K]`` int64): row ``i``'s non-zero activations are
  ``values[crow[i]:crow[i+1]]`` in the columns ``col_indices[crow[i]:crow[i+1]]``. Written for large or sparse
  dictionaries (an imported 100k-latent SAE), so that no ``N x K`` matrix is ever built.

:func:`read_activations` returns a dense tensor or a ``torch.sparse_csr`` tensor; the readers here
(:func:`activation_column`, :func:`positive_means`, :func:`top_rows`) take either, and never densify a sparse one.

Examples
--------
>>> import torch
>>> A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
>>> tensors = sparse_tensors([A])
>>> sorted(tensors), tensors["shape"].tolist()
(['col_indices', 'crow_indices', 'shape', 'values'], [2, 3])
>>> S = activations_from(tensors, "activations.safetensors")
>>> activation_column(S, 2).tolist(), positive_means(S).tolist()
([0.0, 3.0], [1.0, 2.0, 3.0])
>>> top_rows(S, 1)
[[(1, 1.0)], [(0, 2.0)], [(1, 3.0)]]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mmconcepts.errors import MMConceptsError

#: The tensors of the sparse form, in the order docs/FORMAT.md lists them.
SPARSE_KEYS = ("crow_indices", "col_indices", "values", "shape")
#: Above this many concepts, activations are stored sparse whatever their density.
SPARSE_CONCEPTS = 4096
#: At or below this share of non-zero activations, they are stored sparse.
SPARSE_DENSITY = 0.25


def is_sparse(A) -> bool:
    """Whether ``A`` is the sparse (CSR) form."""
    import torch

    return isinstance(A, torch.Tensor) and A.layout == torch.sparse_csr


def sparse_tensors(chunks: Iterable, n_concepts: int | None = None) -> dict:
    """The sparse form's tensors of activations given as row chunks (dense ``n x K`` tensors, in order),
    each chunk read once and dropped: memory holds the non-zeros, never ``N x K``."""
    import torch

    counts, cols, values, K = [torch.zeros(1, dtype=torch.int64)], [], [], n_concepts
    for chunk in chunks:
        chunk = torch.as_tensor(chunk).detach().float().cpu()
        if K is None:
            K = int(chunk.shape[1])
        rows, columns = chunk.nonzero(as_tuple=True)
        counts.append(torch.bincount(rows, minlength=chunk.shape[0]).to(torch.int64))
        cols.append(columns.to(torch.int64))
        values.append(chunk[rows, columns])
    crow = torch.cumsum(torch.cat(counts), 0)
    empty = torch.zeros(0, dtype=torch.int64)
    return {"crow_indices": crow.contiguous(), "col_indices": torch.cat(cols) if cols else empty,
            "values": torch.cat(values).contiguous() if values else torch.zeros(0),
            "shape": torch.tensor([crow.numel() - 1, int(K or 0)], dtype=torch.int64)}


def stored_tensors(tensors: dict) -> dict:
    """What ``activations.safetensors`` holds for activations in the sparse form: that form when the
    dictionary is large (more than :data:`SPARSE_CONCEPTS` concepts) or the activations sparse (at most
    :data:`SPARSE_DENSITY` non-zero), else the dense ``"activations"``."""
    N, K = (int(n) for n in tensors["shape"].tolist())
    if K > SPARSE_CONCEPTS or tensors["values"].numel() <= SPARSE_DENSITY * N * K:
        return tensors
    return {"activations": _csr(tensors).to_dense().contiguous()}


def _csr(tensors: dict):
    import torch

    import warnings

    N, K = (int(n) for n in tensors["shape"].tolist())
    with warnings.catch_warnings():  # "sparse CSR support is in beta": only its stable part is used here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(tensors["crow_indices"], tensors["col_indices"], tensors["values"], (N, K),
                                       check_invariants=False)


def activations_from(tensors: dict, where, fix: str = "run `mmconcepts learn` again"):
    """The activations held by the tensors of ``activations.safetensors`` (either form), checked: a dense
    tensor, or a CSR tensor; a one-line error naming ``where`` for anything else."""
    import torch

    keys = set(tensors)
    if keys == {"activations"}:
        A = tensors["activations"]
        if A.ndim != 2:
            raise MMConceptsError(f"{where}: 'activations' has shape {tuple(A.shape)}, expected N x K; {fix}")
        return A
    if keys != set(SPARSE_KEYS):
        raise MMConceptsError(f"{where} holds {', '.join(sorted(keys)) or 'nothing'}; expected 'activations' or "
                              f"the sparse {', '.join(SPARSE_KEYS)}; {fix}")
    crow, col, values, shape = (tensors[k] for k in SPARSE_KEYS)
    bad = None
    if shape.shape != (2,) or shape.dtype != torch.int64 or bool((shape < 0).any()):
        bad = "'shape' is not two sizes"
    elif crow.dtype != torch.int64 or col.dtype != torch.int64 or values.dtype != torch.float32:
        bad = "the indices must be int64 and the values float32"
    elif crow.shape != (int(shape[0]) + 1,) or col.ndim != 1 or values.shape != col.shape:
        bad = "the index and value tensors do not fit 'shape'"
    elif int(crow[0]) != 0 or int(crow[-1]) != col.numel() or bool((crow.diff() < 0).any()):
        bad = "'crow_indices' are not the row offsets of the values"
    elif col.numel() and (int(col.min()) < 0 or int(col.max()) >= int(shape[1])):
        bad = "a column index is outside the concepts"
    elif not bool(torch.isfinite(values).all()):
        bad = "a value is NaN or infinite"
    if bad:
        raise MMConceptsError(f"{where}: {bad}; {fix}")
    return _csr(tensors)


def read_activations(path: str | os.PathLike, fix: str = "run `mmconcepts learn` again"):
    """The activations of ``activations.safetensors`` at ``path``: dense, or sparse (CSR)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path))
    except Exception:  # missing or truncated file: safetensors raises several error types
        raise MMConceptsError(f"cannot read {path}; {fix}") from None
    return activations_from(tensors, path, fix)


def _rows(A):
    import torch

    crow = A.crow_indices()
    return torch.repeat_interleave(torch.arange(crow.numel() - 1), crow.diff())


def activation_column(A, k: int):
    """Concept ``k``'s activations over the samples, a dense ``N`` float32 vector (either form)."""
    import torch

    if not is_sparse(A):
        return torch.as_tensor(A).float()[:, k]
    mask = A.col_indices() == int(k)
    out = torch.zeros(A.shape[0])
    out[_rows(A)[mask]] = A.values()[mask].float()
    return out


def positive_means(A):
    """``K``: the mean of each concept's positive activations (0 for a concept never active), either form."""
    import torch

    if not is_sparse(A):
        A = torch.as_tensor(A).float()
        return A.clamp(min=0).sum(dim=0) / (A > 0).sum(dim=0).clamp(min=1)
    col, values = A.col_indices(), A.values().float()
    K = A.shape[1]
    sums = torch.zeros(K).index_add_(0, col, values.clamp(min=0))
    counts = torch.zeros(K).index_add_(0, col, (values > 0).float())
    return sums / counts.clamp(min=1)


def top_rows(A, n: int) -> list[list[tuple[int, float]]]:
    """Each concept's ``n`` most activating samples as ``(row, activation)``, largest first. Dense: the top
    ``n`` of the column (ties by ``torch.topk``); sparse: among the concept's non-zero activations only (ties
    by row), so a concept active on fewer samples has fewer."""
    import torch

    if not is_sparse(A):
        A = torch.as_tensor(A).float()
        m = min(n, A.shape[0])
        values, rows = torch.topk(A, m, dim=0)
        return [list(zip(rows[:, k].tolist(), values[:, k].tolist())) for k in range(A.shape[1])]
    K, col, values, rows = A.shape[1], A.col_indices(), A.values().float(), _rows(A)
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(col[order], stable=True)]  # by concept, then by activation
    col, values, rows = col[order], values[order], rows[order]
    starts = torch.zeros(K + 1, dtype=torch.int64)
    starts[1:] = torch.cumsum(torch.bincount(col, minlength=K), 0)
    keep = (torch.arange(col.numel()) - starts[col]) < n
    result: list[list[tuple[int, float]]] = [[] for _ in range(K)]
    for k, r, v in zip(col[keep].tolist(), rows[keep].tolist(), values[keep].tolist()):
        result[k].append((r, v))
    return result
