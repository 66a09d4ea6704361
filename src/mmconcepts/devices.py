"""Devices, named once: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (and ``mps``), for models, dictionaries and
scorers alike.

:func:`check_device` checks the spelling without importing torch (the command line uses it);
:func:`resolve_device` turns a name into the ``torch.device`` to use, ``auto`` meaning CUDA when there is
one, and refuses a device this machine does not have with a one-line error.
"""

from __future__ import annotations

import re

from mmconcepts.errors import MMConceptsError

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def check_device(device) -> str:
    """``device`` as a lower-case name if it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    text = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE.match(text):
        raise MMConceptsError(f"unknown device {device!r}: choose auto, cpu, cuda or cuda:N")
    return text


def resolve_device(device=None):
    """The ``torch.device`` named ``device`` (``None`` and ``"auto"``: CUDA when available, else the CPU).

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MMConceptsError(f"device {name!r} asked for but CUDA is not available here: use --device cpu "
                                  "or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MMConceptsError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPU(s) here)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MMConceptsError(f"device {name!r} asked for but MPS is not available here: use --device cpu")
    return dev
