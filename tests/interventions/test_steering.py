"""Steering and ablation with a concept on the tiny LLaVA pipeline (teacher-mode Semi-NMF concepts of 'dog').

The interventions are checked against hand computations on the hidden states the model itself produced: a
recorder hooked *before* the steering hook on the same module sees the untouched output of every forward
call, one hooked after it sees what the rest of the model receives.
"""

import json
import re
import shutil

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.decompose import SemiNMF
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import load_features
from mmconcepts.files import read_json, write_json
from mmconcepts.concepts import load_concepts
from mmconcepts.concepts.concept_set import ConceptSet
from mmconcepts.interventions.directions import (DEFAULT_POSITIONS, STRENGTH_FACTOR, concept_direction, default_strength,
                                             diffmean_direction, random_direction)
from mmconcepts.interventions.steer_captions import steer
from mmconcepts.interventions.steering import Steering, chunk_steering
from mmconcepts.models.generation import generate_ids
from mmconcepts.concepts.decoding import typical_strengths

TEACHER = " a dog on the grass"


class Calls:
    """Records the hidden-state output of every forward call of one module (before or after other hooks)."""

    def __init__(self, module, first: bool):
        self.outputs = []
        self.handle = module.register_forward_hook(lambda m, a, out: self.outputs.append(out.detach().clone()),
                                                   prepend=first)

    def remove(self):
        self.handle.remove()


@pytest.fixture(scope="module")
def setup(tiny_pipeline):
    adapter = tiny_pipeline["adapter"]
    images = sorted((tiny_pipeline["root"] / "test" / "images").glob("*.png"), key=lambda p: int(p.stem))
    concepts = load_concepts(tiny_pipeline["concepts"])
    return {**tiny_pipeline, "adapter": adapter, "images": images, "concepts": concepts}


def _inputs(adapter, image, text=""):
    return adapter.encode([image], [adapter.prompt() + text])


def _planted(seed=0, d=64):
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


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
    inputs = _inputs(adapter, setup["images"][3], TEACHER)
    with torch.inference_mode():
        plain = adapter.model(**inputs, output_hidden_states=True)
    h = plain.hidden_states[-1]  # the final norm's output
    u, s = _planted(), 3.0
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
    inputs = _inputs(adapter, setup["images"][1])
    module = adapter.layer_module("1")
    hooks = dict(module._forward_hooks)
    with torch.inference_mode():
        before = adapter.model(**inputs).logits
    steering = Steering(adapter, 1, _planted(1), 5.0, positions="all")
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
    steering = Steering(adapter, "0", _planted(2), 2.0, positions="all")
    h, extra = torch.randn(1, 5, 64), object()
    module = adapter.layer_module("0")
    known = set(module._forward_hooks)
    with steering:  # the forward hook the steering holds, called on a made-up output
        (hook,) = [fn for key, fn in module._forward_hooks.items() if key not in known]
        out = hook(module, (), (h, extra))
        assert isinstance(out, tuple) and out[1] is extra and torch.equal(out[0], h + 2.0 * _planted(2))
        assert torch.equal(hook(module, (), h), h + 2.0 * _planted(2))


@pytest.mark.parametrize("positions,step", [("token", 2), ("after", 2), ("all", None), ("after", 0)])
def test_positions_touch_exactly_the_intended_calls_and_positions(setup, positions, step):
    adapter = setup["adapter"]
    inputs = _inputs(adapter, setup["images"][0])
    u, s, n_new = _planted(3), 4.0, 5
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
    u, s = _planted(4), 4.0
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
    U, strengths, steps = torch.stack([_planted(5), _planted(6), _planted(7)]), [1.0, 3.0, 5.0], [0, 2, 1]
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
        _recorded(adapter, "norm", steering, lambda: adapter.model(**_inputs(adapter, images[0])))


def test_each_chunk_steers_its_own_rows(setup):
    """:func:`chunk_steering`, the per-chunk context of the generation loop: a chunk of images gets their steps
    and their share of the per-row interventions; batched steering gives each image's caption alone."""
    adapter = setup["adapter"]
    U, strengths = torch.stack([_planted(5), _planted(6), _planted(7)]), [1.0, 3.0, 5.0]
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
    inputs = _inputs(adapter, setup["images"][3], TEACHER)
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
    inputs = _inputs(adapter, setup["images"][3], TEACHER)
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


# ---- directions and strengths ----------------------------------------------------------------------------------
def test_concept_and_random_directions(setup):
    concepts = setup["concepts"]
    u = concept_direction(concepts, 1)
    torch.testing.assert_close(u, concepts.directions[1] / concepts.directions[1].norm())
    r = random_direction(3 * u, seed=5)
    assert r.shape == u.shape and float(r.norm()) == pytest.approx(3.0, rel=1e-6)
    assert torch.equal(r, random_direction(3 * u, seed=5)) and not torch.equal(r, random_direction(3 * u, seed=6))
    assert abs(float(r @ u)) < 3.0  # not the concept itself


def test_centred_direction_is_the_concept_less_its_mean_component(setup):
    from mmconcepts.interventions.directions import centred_direction, unit_direction

    concepts = setup["concepts"]
    mean = torch.randn(64, generator=torch.Generator().manual_seed(3))
    u = concepts.directions[2] / concepts.directions[2].norm()
    m = mean / mean.norm()
    expected = (u - (u @ m) * m) / (u - (u @ m) * m).norm()
    got = centred_direction(concepts, 2, mean)
    torch.testing.assert_close(got, expected)
    assert abs(float(got @ mean)) < 1e-4 and abs(float(got.norm()) - 1) < 1e-5
    calls = []
    assert torch.equal(unit_direction(concepts, 2, "centred", mean=lambda: calls.append(1) or mean), got)
    assert torch.equal(unit_direction(concepts, 2, "concept", mean=lambda: calls.append(1) or mean), u / u.norm())
    assert calls == [1]  # the mean is read only by the direction that needs it
    with pytest.raises(MMConceptsError, match="lies along the mean state"):
        centred_direction(concepts, 2, concepts.directions[2] * 3)
    with pytest.raises(MMConceptsError, match="unknown direction"):
        unit_direction(concepts, 2, "sideways")


def test_diffmean_direction_is_the_hand_computation(setup):
    concepts = setup["concepts"]
    Z, _ = load_features(setup["train"], "norm")
    A = concepts.activations[:, 2]
    order = sorted(range(len(A)), key=lambda i: (-float(A[i]), i))
    for n_top, default in ((7, False), (Z.shape[0] // concepts.n_concepts, True)):
        top = order[:n_top]
        rest = [i for i in range(len(A)) if i not in top]
        expected = Z[top].mean(dim=0) - Z[rest].mean(dim=0)
        got = diffmean_direction(concepts, 2, Z, n_top=None if default else n_top)
        torch.testing.assert_close(got, expected)
    with pytest.raises(MMConceptsError, match="n_top"):
        diffmean_direction(concepts, 2, Z, n_top=Z.shape[0])
    with pytest.raises(MMConceptsError, match="training samples"):
        diffmean_direction(concepts, 2, Z[:5])


def test_default_strength_is_the_typical_activation_times_the_factor(setup):
    concepts = setup["concepts"]
    typical = typical_strengths(concepts.activations)
    for k in range(concepts.n_concepts):  # Semi-NMF concepts are unit vectors
        assert default_strength(concepts, k) == pytest.approx(float(typical[k]) * STRENGTH_FACTOR, rel=1e-5)
    assert default_strength(concepts, 0, factor=1.0) == pytest.approx(float(typical[0]), rel=1e-5)


# ---- steer() and the command line ------------------------------------------------------------------------------
KEYS = {"image", "caption", "steered", "concept", "strength", "mode", "direction", "positions", "layer",
        "token_step"}


def test_steer_on_images(setup):
    adapter, images = setup["adapter"], setup["images"][:2]
    results = steer(setup["concepts"], images, 1, model=adapter, max_new_tokens=6)
    plain = adapter.caption(images, max_new_tokens=6)
    assert [set(r) for r in results] == [KEYS, KEYS]
    assert [r["caption"] for r in results] == plain  # the unsteered caption is the model's own
    assert all(r["mode"] == "add" and r["direction"] == "concept" and r["positions"] == DEFAULT_POSITIONS for r in results)
    assert results[0]["strength"] == pytest.approx(default_strength(setup["concepts"], 1))
    assert all(r["token_step"] is None for r in results)  # a random tiny model never says "dog"
    assert any(r["steered"] != r["caption"] for r in results)
    ablated = steer(setup["concepts"], images[:1], 2, ablate=True, positions="all", model=adapter,
                    max_new_tokens=6)
    assert ablated[0]["mode"] == "ablate" and ablated[0]["strength"] is None
    for direction in ("random", "diffmean"):
        other = steer(setup["concepts"], images[:1], 1, direction=direction, strength=6.0, layer="0",
                      model=adapter, max_new_tokens=6)
        assert other[0]["direction"] == direction and other[0]["layer"] == "0"


def test_steer_starts_at_the_step_the_token_is_predicted(setup, tmp_path):
    """A concepts folder whose token is a word the tiny model does say: steering starts where it is said."""
    adapter, images = setup["adapter"], setup["images"]
    captions = adapter.caption(images, max_new_tokens=12)
    found = next(((i, m.group(0)) for i, c in enumerate(captions) for m in re.finditer(r"(?<!\w)[A-Za-z]{3,}(?!\w)", c)
                  if m.start() > 0), None)
    if found is None:
        pytest.skip("the tiny model says no word after its first token")
    index, word = found
    folder = tmp_path / "concepts"
    shutil.copytree(setup["concepts"].path, folder)
    summary = read_json(folder / "summary.json", "rebuild the fixture")
    write_json(folder / "summary.json", {**summary, "token": word})
    # the dictionary records the token it was learnt for: relearnt for this word as far as the files go
    from mmconcepts.decompose import load_dictionary
    from mmconcepts.decompose.persistence import provenance

    load_dictionary(folder).save(folder, provenance=provenance({**summary, "token": word}))
    (result,) = steer(folder, [images[index]], 0, strength=20.0, positions="after", model=adapter,
                      max_new_tokens=12)
    step = result["token_step"]
    assert result["caption"] == captions[index] and step is not None
    inputs = _inputs(adapter, images[index])
    with torch.inference_mode():
        out = adapter.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    prefix = adapter.tokenizer.decode(new[:step], skip_special_tokens=True).strip()
    assert result["steered"].startswith(prefix)  # the tokens before the step are the unsteered ones
    assert result["steered"] != result["caption"]


def test_cli_json_lines_and_ablate(setup, capsys):
    concepts = str(setup["concepts"].path)
    images = [str(p) for p in setup["images"][:2]]
    code = main(["steer", "--concepts", concepts, "--concept", "1", "--image", images[0], "--image", images[1],
                 "--json", "--max-new-tokens", "5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert all(set(r) == KEYS for r in rows) and [r["image"] for r in rows] == images
    code = main(["steer", "--concepts", concepts, "--concept", "2", "--ablate", "--positions", "all",
                 "--data", str(setup["root"] / "test"), "--limit", "2", "--max-new-tokens", "5"])
    out = capsys.readouterr().out
    assert code == 0 and "ablate concept 2" in out and out.count("before:") == 2 and out.count("after:") == 2
    code = main(["steer", "--concepts", concepts, "--concept", "0", "--direction", "random", "--strength", "8",
                 "--positions", "token", "--layer", "-1", "--image", images[0], "--json", "--max-new-tokens", "5"])
    row = json.loads(capsys.readouterr().out)
    assert code == 0 and row["direction"] == "random" and row["strength"] == 8.0 and row["layer"] == "2"
    code = main(["steer", "--concepts", concepts, "--concept", "0", "--direction", "centred", "--strength", "30",
                 "--image", images[0], "--json", "--max-new-tokens", "5"])
    row = json.loads(capsys.readouterr().out)
    alone = steer(setup["concepts"], [images[0]], 0, direction="centred", strength=30.0, model=setup["adapter"],
                  max_new_tokens=5)[0]
    assert code == 0 and row["direction"] == "centred" and row["steered"] == alone["steered"]


def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], captured.err
    assert captured.out == ""


def test_bad_input(setup, tmp_path, capsys):
    concepts = setup["concepts"]
    folder = str(concepts.path)
    image = str(setup["images"][0])
    base = ["steer", "--concepts", folder, "--image", image]
    _one_line_error(capsys, [*base, "--concept", "9"], "unknown concept 9")
    _one_line_error(capsys, [*base, "--concept", "-1"], "must be an integer >= 0")
    _one_line_error(capsys, [*base, "--concept", "0", "--strength", "nan"], "finite")
    _one_line_error(capsys, [*base, "--concept", "0", "--strength", "inf"], "finite")
    _one_line_error(capsys, ["steer", "--concepts", folder, "--concept", "0", "--image", str(tmp_path / "no.png")],
                    "image not found")
    _one_line_error(capsys, [*base, "--concept", "0", "--data", str(setup["root"] / "test")], "not both")
    _one_line_error(capsys, ["steer", "--concepts", folder, "--concept", "0"], "--image")
    _one_line_error(capsys, [*base, "--concept", "0", "--ablate", "--direction", "random"], "--ablate")
    _one_line_error(capsys, [*base, "--concept", "0", "--ablate", "--layer", "0"], "learnt at layer norm")
    _one_line_error(capsys, [*base, "--concept", "0", "--positions", "some"], "invalid choice")
    # a concepts folder of another model: a dictionary of another hidden size
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    SemiNMF(n_concepts=4).fit(torch.randn(24, 32, generator=torch.Generator().manual_seed(0))).save(other)
    _one_line_error(capsys, ["steer", "--concepts", str(other), "--concept", "0", "--image", image],
                    "the dictionary has 4 concepts of width 32, summary.json says 4 of width 64")
    adapter = setup["adapter"]
    with pytest.raises(MMConceptsError, match="unknown direction"):
        steer(concepts, [image], 0, direction="north", model=adapter)
    with pytest.raises(MMConceptsError, match="unknown positions"):
        Steering(adapter, "norm", _planted(), 1.0, positions="first")
    with pytest.raises(MMConceptsError, match="unknown mode"):
        Steering(adapter, "norm", _planted(), 1.0, mode="scale")
    with pytest.raises(MMConceptsError, match="hidden size 64"):
        Steering(adapter, "norm", torch.ones(32), 1.0)
    with pytest.raises(MMConceptsError, match="unknown layer"):
        Steering(adapter, 7, _planted(), 1.0)
    with pytest.raises(MMConceptsError, match="step"):
        Steering(adapter, "norm", _planted(), 1.0, step=-1)
