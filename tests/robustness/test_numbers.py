"""Numbers and lengths are checked, nothing is silently wrong.

Every count option of every subcommand refuses a negative value (and zero where zero means nothing) at the
command line, as one ``error:`` line naming the option, exit status 2, no traceback and nothing written; the
library's settings and entry points refuse the same values (``open_dataset(limit=-1)`` used to drop the last
image, ``report --n-explanations -1`` to show none). A teacher caption longer than the model's context is cut
to it and counted, never read past it; a generation that cannot fit is refused; ``--revision`` of the shipped
model (which has one version) is refused instead of recorded and ignored.
"""

from __future__ import annotations

import json
import warnings

import pytest

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError

CONTEXT = 256  # max_position_embeddings of the shipped ShapesWorld captioner


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A ShapesWorld dataset (12 images, 4 with a circle in a reference caption), a teacher-mode store of
    'circle' read by the shipped captioner, and a grounded 2-concept Semi-NMF folder learnt on it."""
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.decompose import learn
    from mmconcepts.extract import extract
    from mmconcepts.concepts import ground
    from mmconcepts.models import load_model

    root = tmp_path_factory.mktemp("numbers")
    adapter = load_model(None, device="cpu")
    write_dataset(root / "data", n=12, seed=5, split="train")
    extract(root / "data", "circle", out=root / "store", model=adapter, mode="teacher", dtype="float32",
            progress=False)
    learn(root / "store", "norm", n_concepts=2, out=root / "concepts")
    ground(root / "concepts", model=adapter)
    return {"root": root, "adapter": adapter, "data": root / "data", "store": root / "store",
            "concepts": root / "concepts", "image": root / "data" / "images" / "000000.png"}


def _base(command: str, i: dict, out) -> list[str]:
    """A command line that runs (and quickly) as it stands; a bad option appended overrides its value."""
    data, store, concepts, image = (str(i[k]) for k in ("data", "store", "concepts", "image"))
    return {
        "extract": ["extract", "--data", data, "--token", "circle", "--mode", "teacher", "--out", out, "--quiet",
                    "--num-workers", "0"],
        "score-captions": ["score-captions", "--data", data, "--limit", "2", "--max-new-tokens", "8"],
        "learn": ["learn", "--features", store, "-k", "2", "--out", out, "--no-ground"],
        "import-sae": ["import-sae", concepts, "--features", store, "--out", out, "--no-ground"],
        "export": ["export", "--concepts", concepts, "--format", "neuronpedia", "--out", out],
        "explain": ["explain", "--concepts", concepts, "--image", image, "--json"],
        "steer": ["steer", "--concepts", concepts, "--concept", "0", "--image", image, "--max-new-tokens", "4",
                  "--json"],
        "evaluate": ["evaluate", "--concepts", concepts, "--test-features", store, "--out", out, "--methods",
                     "semi-nmf", "--baselines", ""],
        "sweep": ["sweep", "--features", store, "--test-features", store, "--layers", "norm", "-k", "2", "--out",
                  out],
        "report": ["report", "--concepts", concepts, "--out", out],
        "trace": ["trace", "--concepts", concepts, "--through", concepts, "--images", data, "--out", out],
        "shapesworld": ["shapesworld", "--out", out, "--n", "2"],
        "demo": ["demo", "--out", out, "--n-train", "2", "--n-test", "2", "--no-causal", "--quiet"],
        "train-toy": ["train-toy", "--out", out, "--steps", "1", "--batch-size", "1", "--eval-every", "1"],
        "benchmark": ["benchmark", "--out", out, "--tokens", "circle", "--seeds", "0", "--methods", "pca",
                      "--baselines", "", "--no-extended", "--n-train", "2", "--n-test", "2", "--quiet"],
    }[command]


#: (subcommand, option, bad value): every count option of every subcommand, and the floats with an obvious range.
BAD = [
    *[("extract", "--limit", v) for v in ("-1", "0")],
    *[("extract", opt, v) for opt in ("--batch-size", "--max-new-tokens", "--shard-size", "--commit-every")
      for v in ("-1", "0")],
    ("extract", "--num-workers", "-1"), ("extract", "--min-new-tokens", "-1"),
    *[("score-captions", opt, v) for opt in ("--batch-size", "--max-new-tokens", "--limit") for v in ("-1", "0")],
    *[("learn", opt, v) for opt in ("-k", "--max-iter", "--n-words") for v in ("-1", "0")],
    ("learn", "--seed", "-1"),
    *[("learn", opt, v) for opt in ("--l1", "--relative-l1", "--tol") for v in ("-0.5", "nan")],
    ("learn", "--min-ratio", "-0.5"), ("learn", "--min-ratio", "2"),
    *[("explain", "--top", v) for v in ("-1", "0")],
    ("steer", "--concept", "-1"), ("steer", "--seed", "-1"), ("steer", "--limit", "-1"),
    *[("steer", "--max-new-tokens", v) for v in ("-1", "0")],
    *[("import-sae", "--n-words", v) for v in ("-1", "0")],
    ("import-sae", "--min-ratio", "-0.5"), ("import-sae", "--min-ratio", "2"),
    *[("evaluate", opt, v) for opt in ("--bert-layers", "--causal-images", "--fidelity-images") for v in ("-1", "0")],
    *[("export", "--n-images", v) for v in ("-1", "0")],
    ("evaluate", "--seed", "-1"),
    *[("sweep", "-k", v) for v in ("-1", "0")], ("sweep", "--seed", "-1"),
    ("report", "--n-explanations", "-1"),
    *[("trace", opt, v) for opt in ("--n-images", "--batch-size", "--top", "--n-top-patches") for v in ("-1", "0")],
    *[("shapesworld", "--n", v) for v in ("-1", "0")], ("shapesworld", "--seed", "-1"),
    *[("demo", opt, v) for opt in ("--n-train", "--n-test", "-k") for v in ("-1", "0")], ("demo", "--seed", "-1"),
    *[("train-toy", opt, v) for opt in ("--steps", "--batch-size", "--threads", "--eval-every") for v in ("-1", "0")],
    ("train-toy", "--seed", "-1"), ("train-toy", "--step-offset", "-1"), ("train-toy", "--lr", "-0.1"),
    *[("benchmark", opt, v) for opt in ("-k", "--n-train", "--n-test", "--n-noise", "--batch-size",
                                        "--max-new-tokens", "--threads") for v in ("-1", "0")],
    ("benchmark", "--seeds", "-1"), ("benchmark", "--seeds", "0,-1"), ("benchmark", "-k", "20,0"),
]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("command", "option", "value"), BAD, ids=[" ".join(case) for case in BAD])
def test_a_bad_count_is_one_line_error_at_the_command_line(command, option, value, inputs, tmp_path, capsys):
    out = tmp_path / ("report.html" if command == "report" else "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([*_base(command, inputs, str(out)), option, value])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    # argparse refuses it, naming the option: before any folder is read or any model loaded
    assert f"argument {option}" in line, line
    assert not out.exists()


def test_every_count_option_is_checked_by_its_type_and_tested_here():
    """No option of any subcommand is a bare ``int`` or ``float`` (``--strength`` takes any finite number,
    negative included: it is checked by the library), and every checked one has a bad value in :data:`BAD`."""
    import argparse

    from mmconcepts.cli import build_parser
    from mmconcepts.cli._common import fraction, nonnegative_float, nonnegative_int, positive_int

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = [(name, action) for name, p in sub.choices.items() for action in p._actions]
    bare = [(name, a.option_strings[-1]) for name, a in actions
            if a.type in (int, float) and a.option_strings != ["--strength"]]
    assert bare == []
    tested = {(command, option) for command, option, _ in BAD}
    untested = [(name, a.option_strings[-1]) for name, a in actions
                if a.type in (positive_int, nonnegative_int, nonnegative_float, fraction)
                and not any((name, s) in tested for s in a.option_strings)]
    assert untested == []


# ---- the library refuses the same values -----------------------------------------------------------------------
def test_open_dataset_refuses_a_limit_that_is_not_a_count(inputs):
    from mmconcepts.data import open_dataset

    assert len(open_dataset(inputs["data"], limit=3)) == 3 and len(open_dataset(inputs["data"])) == 12
    for bad in (-1, 0, 2.5, True):  # -1 used to keep all but the last image
        with pytest.raises(MMConceptsError, match="limit"):
            open_dataset(inputs["data"], limit=bad)


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_evaluation_settings_refuse_a_bert_layer_that_is_not_a_count(value):
    from mmconcepts.evaluation.evaluate import EvaluationSettings

    assert EvaluationSettings(bert_layers=None).bert_layers is None
    assert EvaluationSettings(bert_layers=3).bert_layers == 3
    with pytest.raises(MMConceptsError, match=r"bert_layers \(--bert-layers\) must be an integer >= 1"):
        EvaluationSettings(bert_layers=value)


def test_entry_points_refuse_bad_counts(inputs, tmp_path):
    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.workflows.demo import run_demo
    from mmconcepts.workflows.sweep import sweep
    from mmconcepts.explanations import explain
    from mmconcepts.interventions.steer_captions import steer
    from mmconcepts.report import build_report
    from mmconcepts.toy.train import train

    adapter, concepts, store, image = (inputs[k] for k in ("adapter", "concepts", "store", "image"))
    quick = dict(model=adapter, causal=False, maps=False, progress=False, log=lambda line: None)
    calls = [
        (lambda: build_report(concepts, out=tmp_path / "r.html", n_explanations=-1), "n_explanations"),
        (lambda: explain(concepts, image, model=adapter, top=-1), "top"),
        (lambda: explain(concepts, image, model=adapter, top=0), "top"),
        (lambda: steer(concepts, [image], 0, model=adapter, seed=-1, max_new_tokens=2), "seed"),
        (lambda: sweep(store, store, ["norm"], tmp_path / "sweep", n_concepts=0, model=adapter), "n_concepts"),
        (lambda: sweep(store, store, ["norm"], tmp_path / "sweep", n_concepts=2, seed=-1, model=adapter), "seed"),
        (lambda: run_demo(tmp_path / "demo", n_train=2, n_test=2, n_concepts=0, **quick), "n_concepts"),
        (lambda: run_demo(tmp_path / "demo", n_train=2, n_test=2, seed=-1, **quick), "seed"),
        (lambda: write_dataset(tmp_path / "sw", n=2, seed=-1), "seed"),
        (lambda: train(tmp_path / "toy", steps=1, batch_size=1, n_eval=1, seed=-1), "seed"),
        (lambda: train(tmp_path / "toy", steps=1, batch_size=1, n_eval=1, step_offset=-1), "step_offset"),
        (lambda: adapter.caption([image], batch_size=-1), "batch_size"),  # used to caption nothing
        (lambda: adapter.caption([image], max_new_tokens=0), "max_new_tokens"),
    ]
    for call, match in calls:
        with pytest.raises(MMConceptsError, match=match):
            call()
    assert not any(tmp_path.iterdir())


# ---- the model's context ---------------------------------------------------------------------------------------
def _long_caption_data(root, n=3):
    from tests.fixtures.datasets import write_images_dataset

    filler = "and a small red square " * 450  # ~10,000 characters, ~2,300 tokens: 9 times the context
    data = write_images_dataset(root, n=n, captions=("x",))
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    rows[0]["captions"] = ["a blue circle " + filler]  # the word before the cut: cut and kept
    rows[1]["captions"] = ["a blue circle"]  # short: read whole
    rows[2]["captions"] = [filler + "circle"]  # the word past the cut: not kept
    (data / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, [r["captions"][0] for r in rows]


def test_a_long_teacher_caption_is_cut_to_the_context_and_counted(inputs, tmp_path):
    from mmconcepts.extract import extract, load_metadata
    from mmconcepts.extract.batches import TruncatedCaptionWarning

    adapter = inputs["adapter"]
    assert adapter.context_length == CONTEXT
    data, captions = _long_caption_data(tmp_path / "data")
    widths = []
    hook = adapter.decoder_layers()[0].register_forward_pre_hook(
        lambda module, args, kwargs: widths.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    try:
        with pytest.warns(TruncatedCaptionWarning, match="2 reference caption.*context of 256"):
            manifest = extract(data, "circle", out=tmp_path / "s", model=adapter, mode="teacher", dtype="float32",
                               progress=False)
    finally:
        hook.remove()
    assert widths and max(widths) <= CONTEXT  # the model never read a position past its context
    counts = manifest["counts"]
    assert counts["kept"] == 2 and counts["truncated_captions"] == 2 and counts["beyond_context"] == 1
    assert counts["tokens"]["circle"]["truncated_captions"] == 2
    rows = load_metadata(tmp_path / "s")
    assert [r["index"] for r in rows] == [0, 1] and all(r["position"] < CONTEXT for r in rows)
    assert captions[0].startswith(rows[0]["caption"]) and len(rows[0]["caption"]) < len(captions[0])
    assert rows[1]["caption"] == captions[1]
    prompt = adapter.prompt(manifest["instruction"])
    encoded = adapter.encode([data / rows[0]["image"]], [prompt + " " + rows[0]["caption"]])
    assert encoded["input_ids"].shape[1] <= CONTEXT


def test_the_command_line_warns_of_cut_captions_on_one_line(inputs, tmp_path, capsys):
    data, _ = _long_caption_data(tmp_path / "data")
    assert main(["extract", "--data", str(data), "--token", "circle", "--mode", "teacher", "--out",
                 str(tmp_path / "s"), "--quiet", "--num-workers", "0"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "truncated_captions" in warning[0] and "beyond_context" in warning[0]
    counts = json.loads((tmp_path / "s" / "manifest.json").read_text())["counts"]
    assert counts["truncated_captions"] == 2 and counts["beyond_context"] == 1


def test_a_generation_longer_than_the_context_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "s"
    # the prompt takes 80 tokens (its image included): 250 new tokens would reach position 330 of 256
    code = main(["extract", "--data", str(inputs["data"]), "--token", "circle", "--out", str(out),
                 "--max-new-tokens", "250", "--quiet", "--num-workers", "0", "--limit", "2"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "context of 256" in line and "--max-new-tokens 176" in line and "250" in line
    assert not out.exists()


# ---- --revision of the shipped model ---------------------------------------------------------------------------
def test_revision_of_the_shipped_model_is_refused(inputs, tmp_path, capsys):
    from mmconcepts.workflows.benchmark import BenchmarkSettings
    from mmconcepts.extract import read_manifest
    from mmconcepts.models import EMBEDDED_MODEL, ModelOptions, load_model
    from mmconcepts.models.head import load_head

    for argv in (["info", "--revision", "v2"], ["info", "--model", EMBEDDED_MODEL, "--revision", "v2"],
                 ["extract", "--data", str(inputs["data"]), "--token", "circle", "--mode", "teacher", "--revision",
                  "v2", "--out", str(tmp_path / "s"), "--quiet"]):
        code = main(argv)
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and "--revision" in line and "shipped" in line
    assert not (tmp_path / "s").exists()
    for call in (lambda: load_model(None, revision="v2", device="cpu"),
                 lambda: load_model(EMBEDDED_MODEL, revision="v2", device="cpu"),
                 lambda: load_head(None, revision="v2"),
                 lambda: ModelOptions(model=EMBEDDED_MODEL, revision="v2"),
                 # a later stage following a store of the shipped model
                 lambda: ModelOptions(revision="v2").following(read_manifest(inputs["store"])),
                 lambda: BenchmarkSettings(model=ModelOptions(revision="v2"))):
        with pytest.raises(MMConceptsError, match="--revision v2 does not apply to the shipped model"):
            call()
    # no model named may still follow a store made with a hub model: the revision is kept for it
    assert ModelOptions(revision="v2").revision == "v2"
    hub = {"model_options": {"model": "org/vlm", "commit": "abc"}}
    assert ModelOptions(revision="v2").following(hub).revision == "v2" and ModelOptions().following(hub).revision == "abc"
    # a store whose record kept a revision of the shipped model (older versions recorded and ignored it)
    old = {"model_options": {"model": EMBEDDED_MODEL, "revision": "v2", "commit": None}}
    assert ModelOptions(device="cpu").following(old).revision is None
