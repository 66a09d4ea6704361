"""Recorders of hidden states at chosen positions, built on the adapter's one hook owner
(:meth:`~mmconcepts.models.base.ModelAdapter.hooks`).

:class:`StepRecorder` serves generation: every forward call during ``generate`` is one decoding step, and the
hidden state at its *last* position is the one from which that step's token is predicted. It keeps one
``B x D`` slice per step and layer on the model's device; :meth:`StepRecorder.gather` copies only the
selected (row, step) pairs to the CPU.

:class:`PositionRecorder` serves teacher forcing: the positions are known before the forward pass, so the
hook keeps only ``hidden[row, position[row]]``.

:class:`PrefillRecorder` serves ``--positions image``: of the prompt's pass (the first forward call) it keeps
every row's image-token states.

All are context managers: the hooks exist only inside the ``with`` block.
"""

from __future__ import annotations


class _Recorder:
    """A callback (:meth:`_keeper`) recording every layer of ``layers``, all in one
    :class:`~mmconcepts.models.hooks.Hooks`."""

    def __init__(self, adapter, layers: list[str]):
        self.hooks = adapter.hooks()
        for name in layers:
            self.hooks.record(name, self._keeper(name))

    def _keeper(self, name: str):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self.hooks.__exit__(*exc)


class StepRecorder(_Recorder):
    """Keeps the last-position hidden state of every forward call (one per generated token)."""

    def __init__(self, adapter, layers: list[str]):
        self.steps: dict[str, list] = {name: [] for name in layers}
        super().__init__(adapter, layers)

    def _keeper(self, name: str):
        steps = self.steps[name]
        return lambda hidden, call: steps.append(hidden[:, -1, :].detach())

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
        self.rows = rows
        self.positions = positions
        self.states: dict = {}
        super().__init__(adapter, layers)

    def _keeper(self, name: str):
        def keep(hidden, call):
            self.states[name] = hidden[self.rows.to(hidden.device), self.positions.to(hidden.device)].detach()

        return keep

    def gather(self) -> dict:
        """``{layer: n x D CPU tensor}``: the kept state of every row."""
        return {name: s.float().cpu() for name, s in self.states.items()}


class PrefillRecorder(_Recorder):
    """Keeps, of the first forward call (a plain pass, or the prefill of ``generate``), the states of every row
    at its own ``positions[row]`` (a 1-D long tensor a row: the image tokens of the prompt)."""

    def __init__(self, adapter, layers: list[str], positions: list):
        self.positions = positions
        self.states: dict[str, list] = {}
        super().__init__(adapter, layers)

    def _keeper(self, name: str):
        from mmconcepts.models.vision_parts import is_vision_layer

        if is_vision_layer(name):
            return self._image_side_keeper(name)

        def keep(hidden, call):
            if call == 0:
                self.states[name] = [hidden[row, p.to(hidden.device)].detach()
                                     for row, p in enumerate(self.positions)]

        return keep

    def _image_side_keeper(self, name: str):
        """A vision layer or the projector: one sequence per image, its last positions the image tokens' patches
        in order (a class token in front left out); refused where they do not line up with the prompts."""
        from mmconcepts.models.vision_parts import image_side_starts

        def keep(hidden, call):
            if call != 0:
                return
            starts = image_side_starts(hidden, [len(p) for p in self.positions], name, "read a decoder layer")
            self.states[name] = [hidden[row, start:].detach() for row, start in enumerate(starts)]

        return keep

    def gather(self, rows: list[int]) -> dict:
        """``{layer: n x D CPU tensor}``: the kept states of ``rows`` (each row's positions in turn)."""
        import torch

        return {name: torch.cat([states[r] for r in rows]).float().cpu() if rows else
                torch.empty(0, states[0].shape[-1] if states else 0) for name, states in self.states.items()}
