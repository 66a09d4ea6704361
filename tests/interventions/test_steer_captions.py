"""``steer()`` and ``mmconcepts steer``: captions without and with a concept, on the tiny LLaVA pipeline."""

import json
import re
import shutil

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.decompose import SemiNMF
from mmconcepts.errors import MMConceptsError
from mmconcepts.files import read_json, write_json
from mmconcepts.interventions.directions import DEFAULT_POSITIONS, default_strength
from mmconcepts.interventions.steer_captions import steer
from mmconcepts.interventions.steering import Steering

from steering_helpers import encoded, planted


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
    inputs = encoded(adapter, images[index])
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
        Steering(adapter, "norm", planted(), 1.0, positions="first")
    with pytest.raises(MMConceptsError, match="unknown mode"):
        Steering(adapter, "norm", planted(), 1.0, mode="scale")
    with pytest.raises(MMConceptsError, match="hidden size 64"):
        Steering(adapter, "norm", torch.ones(32), 1.0)
    with pytest.raises(MMConceptsError, match="unknown layer"):
        Steering(adapter, 7, planted(), 1.0)
    with pytest.raises(MMConceptsError, match="step"):
        Steering(adapter, "norm", planted(), 1.0, step=-1)
