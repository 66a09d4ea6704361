"""Small helpers shared by the intervention tests."""

import torch


def encoded(adapter, image, text=""):
    return adapter.encode([image], [adapter.prompt() + text])


def planted(seed=0, d=64):
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()
