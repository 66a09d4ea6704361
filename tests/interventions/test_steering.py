"""Steering and ablation with a concept on the tiny LLaVA pipeline (teacher-mode Semi-NMF concepts of 'dog').

The interventions are checked against hand computations on the hidden states the model itself produced: a
recorder hooked *before* the steering hook on the same module sees the untouched output of every forward
call, one hooked after it sees what the rest of the model receives.
"""

import pytest
import torch

from mmconcepts.decompose import SemiNMF
from mmconcepts.errors import MMConceptsError
from mmconcepts.concepts.concept_set import ConceptSet
from mmconcepts.interventions.steering import Steering, chunk_steering
from mmconcepts.models.generation import generate_ids

TEACHER = " a dog on the grass"


class Calls:
    """Records the hidden-state output of every forward call of one module (before or after other hooks)."""

    def __init__(self, module, first: bool):
        self.outputs = []
        self.handle = module.register_forward_hook(lambda m, a, out: self.outputs.append(out.detach().clone()),
                                                   prepend=first)

    def remove(self):
        self.handle.remove()

from steering_helpers import encoded, planted


def _recorded(adapter, layer, steering, run):
    """``(before, after, steering)``: every call's output before and after the steering hook, during ``run``."""
    module = adapter.layer_module(layer)
    with steering:
        before, after = Calls(module, first=True), Calls(module, first=False)
        try:
            with torch.inference_mode():
                run()
        finally:
            before.remove()
            after.remove()
    return before.outputs, after.outputs


# ---- the hook ------------------------------------------------------------------------------------------------
def test_adding_at_the_final_norm_changes_the_logits_as_computed_by_hand(setup):
    adapter = setup["adapter"]
    inputs = encoded(adapter, setup["images"][3], TEACHER)
    with torch.inference_mode():
        plain = adapter.model(**inputs, output_hidden_states=True)
    h = plain.hidden_states[-1]  # the final norm's output
    u, s = planted(), 3.0
    head = adapter.lm_head()
    with Steering(adapter, "norm", u, s, positions="all"), torch.inference_mode():
        steered = adapter.model(**inputs).logits
    with torch.inference_mode():
        expected = head(h + s * u)
    assert torch.equal(steered, expected)
    # one forward pass is call 0: "token" edits its last position only, the one predicting the next token
    with Steering(adapter, "norm", u, s, positions="token") as steering, torch.inference_mode():
        last = adapter.model(**inputs).logits
    assert steering.calls == 1 and steering.edited == [0]
    assert torch.equal(last[:, :-1], plain.logits[:, :-1])
    edited = h.clone()
    edited[:, -1] = h[:, -1] + s * u
    with torch.inference_mode():
        assert torch.equal(last, head(edited))  # the same shapes, so the same rounding as the model's


def test_the_model_is_unchanged_after_the_context_exits(setup):
    adapter = setup["adapter"]
    inputs = encoded(adapter, setup["images"][1])
    module = adapter.layer_module("1")
    hooks = dict(module._forward_hooks)
    with torch.inference_mode():
        before = adapter.model(**inputs).logits
    steering = Steering(adapter, 1, planted(1), 5.0, positions="all")
    with steering, torch.inference_mode():
        assert len(module._forward_hooks) == len(hooks) + 1
        during = adapter.model(**inputs).logits
    with torch.inference_mode():
        after = adapter.model(**inputs).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after) and dict(module._forward_hooks) == hooks
    # an exception inside the block removes the hook too
    with pytest.raises(KeyError), steering:
        raise KeyError("boom")
    assert dict(module._forward_hooks) == hooks


def test_a_tuple_output_has_only_its_hidden_state_replaced(setup):
    adapter = setup["adapter"]
    steering = Steering(adapter, "0", planted(2), 2.0, positions="all")
    h, extra = torch.randn(1, 5, 64), object()
    module = adapter.layer_module("0")
    known = set(module._forward_hooks)
    with steering:  # the forward hook the steering holds, called on a made-up output
        (hook,) = [fn for key, fn in module._forward_hooks.items() if key not in known]
        out = hook(module, (), (h, extra))
        assert isinstance(out, tuple) and out[1] is extra and torch.equal(out[0], h + 2.0 * planted(2))
        assert torch.equal(hook(module, (), h), h + 2.0 * planted(2))


@pytest.mark.parametrize("positions,step", [("token", 2), ("after", 2), ("all", None), ("after", 0)])
def test_positions_touch_exactly_the_intended_calls_and_positions(setup, positions, step):
    adapter = setup["adapter"]
    inputs = encoded(adapter, setup["images"][0])
    u, s, n_new = planted(3), 4.0, 5
    steering = Steering(adapter, "1", u, s, positions=positions, step=step)
    before, after = _recorded(adapter, "1", steering, lambda: adapter.model.generate(
        **inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False))
    assert len(before) == len(after) == steering.calls == n_new  # the prefill, then one call per new token
    assert before[0].shape[1] == inputs["input_ids"].shape[1] and all(b.shape[1] == 1 for b in before[1:])
    expected_calls = {"token": [step], "after": list(range(step or 0, n_new)), "all": list(range(n_new))}[positions]
    assert steering.edited == expected_calls
    for call, (b, a) in enumerate(zip(before, after)):
        touched = torch.zeros(b.shape[:2], dtype=torch.bool)
        if positions == "all":
            touched[:] = True
        elif call in expected_calls:
            touched[:, -1] = True  # the position predicting new token `call`
        assert torch.equal(a[~touched], b[~touched])
        assert torch.equal(a[touched], b[touched] + s * u)


def test_one_step_per_row(setup):
    adapter = setup["adapter"]
    images = setup["images"][:2]
    inputs = adapter.encode(images, [adapter.prompt()] * 2)
    u, s = planted(4), 4.0
    steering = Steering(adapter, "norm", u, s, positions="token", step=[1, 3])
    before, after = _recorded(adapter, "norm", steering, lambda: adapter.model.generate(
        **inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False))
    assert steering.edited == [1, 3]
    for call, (b, a) in enumerate(zip(before, after)):
        for row, row_step in enumerate([1, 3]):
            if call == row_step:
                assert torch.equal(a[row, -1], b[row, -1] + s * u) and torch.equal(a[row, :-1], b[row, :-1])
            else:
                assert torch.equal(a[row], b[row])


def test_one_intervention_per_row_matches_each_run_alone(setup):
    """Per-row directions, strengths and ablated concepts (many interventions in one batch, as the causal
    evaluation runs them) edit each row exactly as that intervention alone would."""
    adapter, concepts = setup["adapter"], setup["concepts"]
    images = setup["images"][:3]
    inputs = adapter.encode(images, [adapter.prompt()] * 3)
    U, strengths, steps = torch.stack([planted(5), planted(6), planted(7)]), [1.0, 3.0, 5.0], [0, 2, 1]
    ks = [0, 1, concepts.n_concepts - 1]
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    for positions in ("token", "all"):
        for kind in ("add", "ablate"):
            kw = dict(direction=U, strength=strengths) if kind == "add" else \
                dict(mode="ablate", dictionary=concepts, concept=ks)
            steering = Steering(adapter, "norm", positions=positions, step=steps, **kw)
            _, together = _recorded(adapter, "norm", steering, lambda: adapter.model.generate(**inputs, **gen))
            for row in range(3):
                one = adapter.encode([images[row]], [adapter.prompt()])
                kw1 = dict(direction=U[row], strength=strengths[row]) if kind == "add" else \
                    dict(mode="ablate", dictionary=concepts, concept=ks[row])
                alone = Steering(adapter, "norm", positions=positions, step=steps[row], **kw1)
                _, single = _recorded(adapter, "norm", alone, lambda: adapter.model.generate(**one, **gen))
                assert len(single) == len(together)
                for a, b in zip(together, single):  # same prompt length: the rows line up with the batch of one
                    torch.testing.assert_close(a[row], b[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(MMConceptsError, match="2 strengths for 3 directions"):
        Steering(adapter, "norm", U, [1.0, 2.0])
    steering = Steering(adapter, "norm", U, strengths, positions="all")
    with pytest.raises(MMConceptsError, match="3 per-row interventions for a batch of 1 rows"):
        _recorded(adapter, "norm", steering, lambda: adapter.model(**encoded(adapter, images[0])))


def test_each_chunk_steers_its_own_rows(setup):
    """:func:`chunk_steering`, the per-chunk context of the generation loop: a chunk of images gets their steps
    and their share of the per-row interventions; batched steering gives each image's caption alone."""
    adapter = setup["adapter"]
    U, strengths = torch.stack([planted(5), planted(6), planted(7)]), [1.0, 3.0, 5.0]
    make = chunk_steering(adapter, dict(layer="norm", positions="token"), steps=[0, None, 2],
                          per_row=dict(direction=U, strength=strengths))
    chunk = make(slice(1, 3))
    assert chunk.step == [0, 2] and chunk.strength == [3.0, 5.0]
    torch.testing.assert_close(chunk.edit(torch.zeros(2, 1, 64), 2)[:, 0], torch.stack([torch.zeros(64), 5.0 * U[2]]))
    assert chunk_steering(adapter, dict(layer="norm", direction=U[0], strength=2.0))(slice(3, 5)).step == [0, 0]
    images = setup["images"][:3]
    per_row = dict(direction=U, strength=[20.0, 20.0, 20.0])
    both = generate_ids(adapter, images, adapter.prompt(), max_new_tokens=4, batch_size=2,
                        context=chunk_steering(adapter, dict(layer="norm", positions="all"), per_row=per_row))
    alone = [generate_ids(adapter, [image], adapter.prompt(), max_new_tokens=4, context=lambda rows, i=i: Steering(
        adapter, "norm", U[i], 20.0, positions="all")) for i, image in enumerate(images)]
    assert both == [ids for (ids,) in alone]


def test_ablating_an_active_concept_removes_its_term(setup):
    adapter, concepts = setup["adapter"], setup["concepts"]
    inputs = encoded(adapter, setup["images"][3], TEACHER)
    active_seen = inactive_seen = 0
    for k in range(concepts.n_concepts):
        steering = Steering(adapter, "norm", mode="ablate", dictionary=concepts, concept=k, positions="all")
        (before,), (after,) = _recorded(adapter, "norm", steering, lambda: adapter.model(**inputs))
        H, out = before[0], after[0]
        v = concepts.encode(H)[:, k]  # the same rows the hook encoded
        active = v > 0
        assert torch.equal(out[~active], H[~active])  # where the concept is inactive nothing changes
        expected = H - v[:, None] * concepts.directions[k][None, :]
        torch.testing.assert_close(out[active], expected[active], rtol=0, atol=1e-6)
        active_seen, inactive_seen = active_seen + int(active.sum()), inactive_seen + int((~active).sum())
    assert active_seen > 0 and inactive_seen > 0


def test_ablating_an_inactive_concept_changes_nothing(setup):
    adapter = setup["adapter"]
    inputs = encoded(adapter, setup["images"][3], TEACHER)
    with torch.inference_mode():
        plain = adapter.model(**inputs, output_hidden_states=True)
    H = plain.hidden_states[-1][0]
    # one concept pointing away from every state of this forward pass: inactive everywhere
    dictionary = SemiNMF(n_concepts=1).fit(-H)
    away = ConceptSet(None, dictionary, {"layer": "norm"}, dictionary.transform(-H), None)
    assert float(away.encode(H).max()) == 0
    with Steering(adapter, "norm", mode="ablate", dictionary=away, concept=0, positions="all") as steering, \
            torch.inference_mode():
        logits = adapter.model(**inputs).logits
    assert steering.calls == 1 and steering.edited == []
    assert torch.equal(logits, plain.logits)
