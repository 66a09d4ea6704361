import numpy as np
import torch
from scipy.optimize import nnls as scipy_nnls

from mmconcepts.decompose.nnls import nnls


def test_matches_scipy_nnls_with_exact_zeros():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(6, 20, generator=g)
    Z = torch.randn(40, 20, generator=g)
    V = nnls(Z, U, tol=1e-9, max_sweeps=2000)
    ref = np.stack([scipy_nnls(U.double().numpy().T, z.double().numpy())[0] for z in Z])
    assert np.allclose(V.numpy(), ref, atol=1e-4)
    assert bool((V >= 0).all())
    assert torch.equal(V == 0, torch.from_numpy(ref == 0))  # the same zeros, exactly


def test_lasso_kkt_conditions():
    g = torch.Generator().manual_seed(1)
    U = torch.randn(5, 30, generator=g)
    Z = torch.randn(50, 30, generator=g)
    l1 = 0.5
    V = nnls(Z, U, l1=l1, tol=1e-10, max_sweeps=3000).double()
    grad = V @ (U @ U.T).double() - Z.double() @ U.T.double() + l1  # gradient of 0.5||Z-VU||^2 + l1 sum V
    active = V > 0
    assert torch.allclose(grad[active], torch.zeros_like(grad[active]), atol=1e-3)
    assert bool((grad[~active] >= -1e-3).all())
    assert float((V == 0).double().mean()) > 0.3
