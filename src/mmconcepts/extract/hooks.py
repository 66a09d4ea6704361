"""Forward hooks that record hidden states at chosen positions, owned by a recorder object (no globals).

:class:`StepRecorder` serves generation: every forward call during ``generate`` is one decoding step, and the
hidden state at its *last* position is the one from which that step's token is predicted. It keeps one
``B x D`` slice per step and layer on the model's device; :meth:`StepRecorder.gather` copies only the
selected (row, step) pairs to the CPU.

:class:`PositionRecorder` serves teacher forcing: the positions are known before the forward pass, so the
hook keeps only ``hidden[row, position[row]]``.
"""

from __future__ import annotations


class _Recorder:
    def __init__(self, adapter, layers: list[str]):
        self.adapter = adapter
        self.modules = {name: adapter.layer_module(name) for name in layers}
        self._handles = []

    def _hook(self, name):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False


class StepRecorder(_Recorder):
    """Keeps the last-position hidden state of every forward call (one per generated token)."""

    def __init__(self, adapter, layers: list[str]):
        super().__init__(adapter, layers)
        self.steps: dict[str, list] = {name: [] for name in layers}

    def _hook(self, name):
        def hook(module, args, output):
            self.steps[name].append(self.adapter.hidden_from_output(output)[:, -1, :].detach())

        return hook

    def gather(self, rows: list[int], steps: list[int]) -> dict:
        """``{layer: n x D CPU tensor}`` with the state of ``rows[i]`` at generation step ``steps[i]``."""
        import torch

        result = {}
        for name, states in self.steps.items():
            if not rows:
                result[name] = torch.empty(0, states[0].shape[-1] if states else 0)
                continue
            # index (step, row) pairs without stacking every step
            picked = torch.stack([states[s][r] for r, s in zip(rows, steps)])
            result[name] = picked.float().cpu()
        return result


class PositionRecorder(_Recorder):
    """Keeps ``hidden[row, positions[row]]`` of the forward pass for the rows in ``rows``."""

    def __init__(self, adapter, layers: list[str], rows, positions):
        super().__init__(adapter, layers)
        self.rows = rows
        self.positions = positions
        self.states: dict = {}

    def _hook(self, name):
        def hook(module, args, output):
            hidden = self.adapter.hidden_from_output(output)
            self.states[name] = hidden[self.rows.to(hidden.device), self.positions.to(hidden.device)].detach()

        return hook

    def gather(self) -> dict:
        return {name: s.float().cpu() for name, s in self.states.items()}
