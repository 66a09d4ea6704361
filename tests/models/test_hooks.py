"""The one hook owner (``adapter.hooks()``) on every tiny family: recording, intervening, reading the decoder's
input, stopping, and the model left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmconcepts.models.hooks import Hooks, StopForward

FAMILIES = ["llava", "qwen2_vl", "idefics3"]


@pytest.fixture(params=FAMILIES)
def adapter(request, tiny_adapters):
    return tiny_adapters[request.param]


def _inputs(adapter, n: int = 2):
    images = [Image.new("RGB", (32, 32), (40 * i, 200 - 30 * i, 90)) for i in range(n)]
    return adapter.encode(images, [adapter.prompt()] * n)


def _installed(model) -> list:
    """Every module's forward hooks and pre-hooks (transformers installs some of its own on a first pass)."""
    return [(name, list(m._forward_hooks), list(m._forward_pre_hooks)) for name, m in model.named_modules()]


def _plain(adapter, inputs, **kw):
    with torch.no_grad():
        return adapter.model(**inputs, **kw)


def test_the_model_is_unchanged_after_the_context_and_after_an_exception(adapter):
    inputs = _inputs(adapter)
    before = _plain(adapter, inputs, output_hidden_states=True)
    untouched = _installed(adapter.model)
    ours = {"record": 0, "before": 0}
    hooks = (adapter.hooks().record("norm", lambda h, c: ours.__setitem__("record", ours["record"] + 1))
             .intervene(0, lambda h, c: h * 2).before(1, lambda h, c: ours.__setitem__("before", 1)))
    with hooks:
        assert len(_installed(adapter.model)) == len(untouched) and _installed(adapter.model) != untouched
        during = _plain(adapter, inputs).logits
    assert ours == {"record": 1, "before": 1} and not torch.equal(during, before.logits)
    assert _installed(adapter.model) == untouched
    assert torch.equal(_plain(adapter, inputs).logits, before.logits)  # bit for bit
    with pytest.raises(KeyError), hooks:
        raise KeyError("boom")
    assert _installed(adapter.model) == untouched
    assert torch.equal(_plain(adapter, inputs).logits, before.logits)
    # an exception raised by a hook inside the forward pass removes every hook too
    with pytest.raises(ZeroDivisionError), adapter.hooks().intervene("norm", lambda h, c: 1 / 0) as failing:
        failing.forward(inputs)
    assert _installed(adapter.model) == untouched


def test_record_gives_the_output_hidden_states(adapter):
    inputs = _inputs(adapter)
    states = _plain(adapter, inputs, output_hidden_states=True).hidden_states
    seen = {}
    hooks = adapter.hooks()
    for name in ("0", "1", "norm"):
        hooks.record(name, lambda hidden, call, name=name: seen.__setitem__(name, hidden.detach().clone()))
    hooks.before(0, lambda hidden, call: seen.__setitem__("input", hidden.detach().clone()))
    with hooks, torch.no_grad():
        adapter.model(**inputs)
    assert hooks.calls == {"0": 1, "1": 1, "norm": 1}
    torch.testing.assert_close(seen["input"], states[0], rtol=0, atol=0)  # the decoder's input embeddings
    torch.testing.assert_close(seen["0"], states[1], rtol=0, atol=0)
    torch.testing.assert_close(seen["1"], states[2], rtol=0, atol=0)
    torch.testing.assert_close(seen["norm"], states[-1], rtol=0, atol=0)


def test_intervene_and_before_change_the_output(adapter):
    inputs = _inputs(adapter)
    plain = _plain(adapter, inputs, output_hidden_states=True)
    head = adapter.lm_head()
    u = torch.randn(adapter.hidden_size, generator=torch.Generator().manual_seed(0))
    with adapter.hooks().intervene("norm", lambda hidden, call: hidden + u), torch.no_grad():
        logits = adapter.model(**inputs).logits
    with torch.no_grad():
        assert torch.equal(logits, head(plain.hidden_states[-1] + u))
    # None leaves the states as they are
    with adapter.hooks().intervene("norm", lambda hidden, call: None), torch.no_grad():
        assert torch.equal(adapter.model(**inputs).logits, plain.logits)
    # the replaced input of decoder layer 0 is what the decoder reads
    seen = {}
    hooks = adapter.hooks().before(0, lambda hidden, call: hidden * 0).record(0, lambda h, c: seen.setdefault("0", h))
    with hooks, torch.no_grad():
        changed = adapter.model(**inputs).logits
    assert not torch.equal(changed, plain.logits) and not torch.equal(seen["0"], plain.hidden_states[1])


def test_stop_after_ends_the_pass_and_only_its_own_stop_is_swallowed(adapter):
    inputs = _inputs(adapter)
    seen = []
    hooks = adapter.hooks().record(0, lambda h, c: seen.append(h)).stop_after(0).record(1, lambda h, c: seen.append(h))
    with hooks, torch.no_grad():
        assert hooks.forward(inputs) is None
    assert hooks.calls == {"0": 1, "1": 0} and len(seen) == 1
    kept = []
    early = adapter.hooks().before(0, lambda h, c: kept.append(h)).stop_before(0)
    with early, torch.no_grad():
        assert early.forward(inputs) is None
    assert early.calls == {"0": 1} and kept[0].shape[:2] == inputs["input_ids"].shape
    outer, inner = adapter.hooks().stop_after("norm"), adapter.hooks()
    with outer, inner, torch.no_grad(), pytest.raises(StopForward):
        inner.forward(inputs)  # another owner's stop propagates
    with torch.no_grad():
        assert adapter.hooks().forward(inputs).logits.shape[0] == 2  # no stop: the model's output


def test_calls_are_counted_from_entry_during_generation(adapter):
    inputs = _inputs(adapter, 1)
    hooks = adapter.hooks().record("norm", lambda h, c: None)
    for _ in range(2):  # entering again restarts the count
        with hooks:
            adapter.generate(inputs, max_new_tokens=3, min_new_tokens=3)
        assert hooks.calls == {"norm": 3}  # the prefill, then one call per new token


def test_misuse_is_refused(adapter):
    hooks = adapter.hooks().record("norm", lambda h, c: None)
    assert isinstance(hooks, Hooks)
    with hooks:
        with pytest.raises(RuntimeError, match="already active"), hooks:
            pass
        with pytest.raises(RuntimeError, match="before entering"):
            hooks.record(0, lambda h, c: None)
    with pytest.raises(Exception, match="unknown layer"):
        adapter.hooks().record(99, lambda h, c: None)
