"""``mmconcepts trace --concepts IMAGE_DIR --through VISION_DIR``: image-token concepts attributed to the vision
tower's concepts, end to end on the shipped captioner, against an autograd pass written here, and its refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmconcepts.attribution.readout import activation_of
from mmconcepts.attribution.trace import TraceSettings, check_pair, trace_images
from mmconcepts.cli import main
from mmconcepts.concepts import ground
from mmconcepts.concepts.concept_set import load_concepts
from mmconcepts.data import open_dataset
from mmconcepts.data.readers import load_image
from mmconcepts.data.shapesworld import write_dataset
from mmconcepts.decompose import learn
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_metadata
from mmconcepts.models import load_model
from mmconcepts.models.patches import image_token_id, image_token_positions


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision-trace")
    captioner = load_model(None)
    shapes = write_dataset(root / "shapes", n=12, seed=0)
    extract(shapes, "circle", out=root / "image", model=captioner, layers=["vision.-1", "vision.1", "projector", "0"],
            positions="image", mode="teacher", progress=False)
    extract(shapes, "circle", out=root / "word", model=captioner, layers=["norm"], mode="teacher", progress=False)
    learn(root / "image", "0", out=root / "ic0", n_concepts=4, seed=0, finish=lambda f: ground(f, model=captioner))
    for layer, name in (("projector", "icp"), ("vision.3", "vc"), ("vision.1", "vc1"), ("norm", "wc")):
        learn(root / ("word" if name == "wc" else "image"), layer, out=root / name, n_concepts=4, seed=0)  # no words
    shutil.copytree(root / "vc", root / "vc-other")  # the same concepts, said to be of another model
    summary = json.loads((root / "vc-other" / "summary.json").read_text())
    (root / "vc-other" / "summary.json").write_text(json.dumps({**summary, "model": "someone/other-vlm"}))
    return root, captioner


def _manual(captioner, image, path, vision_index: int):
    """An autograd pass written out by hand: the tower layer by layer, the patch states after layer
    ``vision_index`` a leaf (the class token kept, constant), the projector, the image features put in place of
    the image tokens' embeddings, the decoder; ``(activation, total)`` of every image concept summed over the
    image tokens, with ``total = sum_p G[p] . H[p]``."""
    prompt = captioner.prompt(image.manifest["instruction"])
    inputs = captioner.encode([load_image(path)], [prompt])
    positions = image_token_positions(inputs["input_ids"][0], image_token_id(captioner, inputs["input_ids"]))
    tower, model = captioner.model.model.vision_tower, captioner.model.model
    with torch.enable_grad():
        h = tower.pre_layrnorm(tower.embeddings(inputs["pixel_values"].to(captioner.dtype)))
        for i, block in enumerate(tower.encoder.layers):
            h = block(h, None)
            h = h[0] if isinstance(h, tuple) else h
            if i == vision_index:
                leaf = h[0, 1:].detach().clone().requires_grad_(True)
                h = torch.cat([h[:, :1].detach(), leaf[None]], 1)
        features = model.multi_modal_projector(h[:, 1:])[0]
        if image.summary["layer"] == "projector":
            states = features
        else:
            ids = inputs["input_ids"].clone()
            ids[0, positions] = 0  # any id: these embeddings are replaced
            embeds = model.language_model.get_input_embeddings()(ids).detach()
            embeds = embeds.index_put((torch.zeros_like(positions), positions), features)
            out = model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                       output_hidden_states=True)
            states = out.hidden_states[int(image.summary["layer"]) + 1][0, positions]
        P = states.shape[0]
        target = torch.stack([activation_of(image, states.float(), [k] * P).sum() for k in range(image.n_concepts)])
        G = torch.stack([torch.autograd.grad(t, leaf, retain_graph=True)[0] for t in target])
    return target.detach().double().numpy(), (G.double() * leaf.detach().double()).sum((1, 2)).numpy()


def _pooled(image, root, path):
    """Each image-token concept's training activations summed over the rows of ``path`` (none: ``None``)."""
    rows = [i for i, m in enumerate(load_metadata(root / "image", "circle")) if m["image"] == str(path)]
    return image.activations[rows].double().sum(0).numpy() if rows else None


@pytest.mark.slow
def test_trace_image_token_concepts_to_vision_concepts(folders, capsys):
    root, captioner = folders
    out = root / "traced"
    code = main(["trace", "--concepts", str(root / "ic0"), "--through", str(root / "vc"), "--images",
                 str(root / "shapes"), "--n-images", "5", "--batch-size", "3", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.startswith("traced 4 image-token concepts through the vision concepts on 5 images")
    assert sorted(p.name for p in out.iterdir()) == ["maps.safetensors", "trace.json", "trace.md"]
    record = json.loads((out / "trace.json").read_text())
    image, vision = load_concepts(root / "ic0"), load_concepts(root / "vc")
    assert (record["pair"], record["word_layer"], record["image_layer"], record["mode"]) == \
        ("image->vision", "0", "vision.3", "prompt")
    paths = [s.image for s in open_dataset(root / "shapes")][:5]  # every image given, in order, caption or not
    assert [str((out / e["image"]).resolve()) for e in record["images"]] == [str(p.resolve()) for p in paths]
    maps = load_file(str(out / "maps.safetensors"))
    in_store = 0
    for i, entry in enumerate(record["images"]):
        assert len(entry["boxes"]) == 64 and tuple(maps[f"patches.{i}"].shape) == (4, 64, vision.n_concepts)
        activation = np.array([c["activation"][i] for c in record["concepts"]])
        pooled = _pooled(image, root, paths[i])
        if pooled is not None:  # the pass reads the image tokens as the store did
            in_store += 1
            np.testing.assert_allclose(activation, pooled, rtol=1e-3, atol=1e-2)
    assert in_store >= 1
    for c in record["concepts"]:
        means = [r["mean"] for r in c["ranking"]]
        assert means == sorted(means, reverse=True) and sorted(r["concept"] for r in c["ranking"]) == [0, 1, 2, 3]
        for i in range(5):  # contributions + residual = the gradient x input total, image by image
            summed = sum(r["per_image"][i] for r in c["ranking"]) + c["residual"]["per_image"][i]
            assert summed == pytest.approx(c["total"][i], rel=1e-4, abs=1e-3)
            per_patch = maps[f"patches.{i}"][c["index"]].sum(0)
            for r in c["ranking"]:
                assert float(per_patch[r["concept"]]) == pytest.approx(r["per_image"][i], rel=1e-4, abs=1e-3)
    # both sides are patch concepts: each named by its top training patches, agreement compares the two
    values = record["image_values"]
    assert len(values) == vision.n_concepts and all(v["words"] == [] for v in values)  # vision concepts: no words
    agreement = record["agreement"]
    judged = [c for c in record["concepts"] if c["target"] is not None]
    assert agreement["n"] == len(judged) and agreement["agree"] == sum(r["agree"] for r in agreement["concepts"])
    for row in agreement["concepts"]:
        assert row["agree"] == (values[row["top"]]["value"] == row["target"])
    md = (out / "trace.md").read_text()
    assert md.startswith("# Trace of image-token concepts at layer 0 <- vision concepts at layer vision.3")
    assert md.count("\n| ") == image.n_concepts + 1
    report = root / "vision-report.html"  # the report names the pair it shows
    assert main(["report", "--concepts", str(root / "ic0"), "--trace", str(out), "--out", str(report)]) == 0
    html = report.read_text()
    active = [c for c in record["concepts"] if max(c["activation"]) > 0]
    assert "<h2>Traced to the vision tower</h2>" in html and "Traced to the image tokens" not in html
    assert html.count('alt="contribution of vision concept') == sum(min(3, len(c["ranking"])) for c in active)


@pytest.mark.slow
@pytest.mark.parametrize("traced, through, index", [("ic0", "vc", 3), ("icp", "vc", 3), ("ic0", "vc1", 1)])
def test_total_is_an_independent_autograd_pass(folders, traced, through, index):
    """The last vision layer (spliced into the projector's input) and an inner one (spliced at its output),
    up to decoder layer 0 or the projector: activations and gradient x input totals are those of the pass
    written out in the test, and the trace adds up to them."""
    root, captioner = folders
    image, vision = load_concepts(root / traced), load_concepts(root / through)
    assert check_pair(image, vision) == "image->vision"
    paths = [s.image for s in open_dataset(root / "shapes")][:2]
    traces = trace_images(image, vision, paths, captioner, settings=TraceSettings(n_images=2, batch_size=2))
    assert [t.image for t in traces] == [str(p) for p in paths]
    for path, t in zip(paths, traces):
        activation, total = _manual(captioner, image, path, index)
        np.testing.assert_allclose(t.trace.activation, activation, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(t.trace.total, total, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(t.trace.contributions.sum(1) + t.trace.residual, t.trace.total, rtol=1e-9, atol=1e-6)
        assert np.abs(t.trace.total).max() > 1e-3  # the leaves reach the image concepts' layer


@pytest.mark.slow
def test_a_vision_layer_the_projector_does_not_read_is_refused(folders):
    root, captioner = folders
    config = captioner.model.config
    saved = config.vision_feature_layer
    config.vision_feature_layer = -2  # the projector reads vision.2, as LLaVA-1.5 reads its second to last layer
    try:
        with pytest.raises(MMConceptsError, match="reads vision.2, so layer vision.3 feeds nothing"):
            trace_images(load_concepts(root / "ic0"), load_concepts(root / "vc"),
                         [s.image for s in open_dataset(root / "shapes")][:1], captioner)
    finally:
        config.vision_feature_layer = saved


def _refused(capsys, root, argv, match):
    out = root / "refused"
    code = main(["trace", *argv, "--images", str(root / "shapes"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and match in err, err
    assert "Traceback" not in err and not out.exists() and not [p for p in root.iterdir()
                                                                if p.name.startswith(".refused")]


@pytest.mark.slow
def test_refusals(folders, capsys):
    root, _ = folders
    ic0, icp, vc, vc1, wc, other = (str(root / n) for n in ("ic0", "icp", "vc", "vc1", "wc", "vc-other"))
    _refused(capsys, root, ["--concepts", vc, "--through", vc1], "in the vision tower")            # vision over vision
    _refused(capsys, root, ["--concepts", ic0, "--through", other], "learn both on stores of one model")
    _refused(capsys, root, ["--concepts", ic0, "--through", wc], "--positions token store")        # words as vision
    _refused(capsys, root, ["--concepts", ic0, "--through", icp], "is at the projector")
    _refused(capsys, root, ["--concepts", wc, "--through", vc], "on the image side")               # words over vision
