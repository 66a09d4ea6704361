"""``mmconcepts trace``: word concepts attributed to image-token concepts (gradient x activation in concept
space), on a planted linear model against the closed form, and end to end on the shipped captioner."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmconcepts.attribution.trace import TraceSettings, layer_rank, trace_states
from mmconcepts.cli import main
from mmconcepts.concepts import ground
from mmconcepts.concepts.concept_set import load_concepts
from mmconcepts.data.shapesworld import write_dataset
from mmconcepts.decompose import learn
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_metadata
from mmconcepts.models import load_model


# ---- the core, on a planted linear model ---------------------------------------------------------------------
def _directions(seed: int = 0, D: int = 12, J: int = 3):
    """A planted image dictionary: J orthonormal directions (J x D) and a basis of their complement."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    return Q[:, :J].T, Q[:, J:].T


def _planted(seed: int, U, rest, P: int, K: int = 2):
    """States H = A U + E (non-negative codes A, a residual E orthogonal to U) and a linear f with K outputs,
    f_k(H) = sum_p W[k, p] . H[p]."""
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(P, U.shape[0], generator=g, dtype=torch.float64) * 3
    E = torch.randn(P, rest.shape[0], generator=g, dtype=torch.float64) @ rest * 0.3
    W = torch.randn(K, P, U.shape[1], generator=g, dtype=torch.float64)
    return A, A @ U + E, W


def _encode(U):
    return lambda Z: (Z.double() @ U.T).clamp_min(0)  # the planted codes back (U orthonormal, E orthogonal)


def test_planted_linear_model_is_its_closed_form():
    """Two images with different numbers of patches, batched: every per-patch and per-concept value, the
    residual and the total are the hand-computed ones, and for a linear f the total is f itself."""
    U, rest = _directions()
    planted = [_planted(1, U, rest, P=5), _planted(2, U, rest, P=7)]

    def f(leaves):
        return torch.stack([torch.einsum("kpd,pd->k", W, leaf) for (_, _, W), leaf in zip(planted, leaves)])

    traces = trace_states(f, [H for _, H, _ in planted], _encode(U), U)
    for (A, H, W), t in zip(planted, traces):
        per_patch = A[None] * torch.einsum("kpd,jd->kpj", W, U)         # A[p, j] (w_p . u_j)
        residual = torch.einsum("kpd,pd->k", W, H - A @ U)
        total = torch.einsum("kpd,pd->k", W, H)
        np.testing.assert_allclose(t.patches, per_patch.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(t.contributions, per_patch.sum(1).numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(t.residual, residual.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(t.total, total.numpy(), rtol=1e-9)
        np.testing.assert_allclose(t.activation, total.numpy(), rtol=1e-9)    # linear, no bias: f = total
        np.testing.assert_allclose(t.contributions.sum(1) + t.residual, t.total, rtol=1e-9)
        assert t.patches.shape == (2, H.shape[0], 3) and np.abs(t.residual).min() > 1e-3  # E is not explained


def test_nonlinear_f_is_gradient_times_activation():
    """A nonlinear f with a bias: the gradient is autograd's at H; contributions + residual is still the
    gradient x input total, which is no longer f."""
    U, rest = _directions()
    A, H, W = _planted(3, U, rest, P=4, K=1)
    w = W[0]

    def f(leaves):
        return (torch.tanh((w * leaves[0]).sum(-1)).sum() + 5.0).reshape(1, 1)

    (t,) = trace_states(f, [H], _encode(U), U)
    G = (1 - torch.tanh((w * H).sum(-1)) ** 2)[:, None] * w            # d f / d H[p]
    np.testing.assert_allclose(t.contributions[0], (A * (G @ U.T)).sum(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(t.total[0], float((G * H).sum()), rtol=1e-10)
    np.testing.assert_allclose(t.contributions.sum(1) + t.residual, t.total, rtol=1e-10)
    assert abs(t.activation[0] - t.total[0]) > 1.0


def test_layer_order_and_settings():
    assert layer_rank("1", 4) < layer_rank("3", 4) < layer_rank("norm", 4)
    with pytest.raises(MMConceptsError, match="n_images"):
        TraceSettings(n_images=0)


# ---- end to end on the shipped captioner -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace")
    captioner = load_model(None)
    shapes = write_dataset(root / "shapes", n=12, seed=0)
    extract(shapes, "circle", out=root / "word", model=captioner, layers=["norm", "0"], progress=False)
    extract(shapes, "circle", out=root / "teacher", model=captioner, layers=["norm"], mode="teacher", progress=False)
    extract(shapes, "circle", out=root / "image", model=captioner, layers=["1"], positions="image", mode="teacher",
            progress=False)  # the image tokens' states do not depend on the caption: no generation needed

    def grounded(folder):
        ground(folder, model=captioner)

    for store, layer, name in (("word", "norm", "wc"), ("word", "0", "wc0"), ("image", "1", "ic"),
                               ("teacher", "norm", "wct")):
        learn(root / store, layer, out=root / name, n_concepts=4, seed=0, finish=grounded)
    return root, captioner


@pytest.mark.slow
def test_trace_end_to_end(folders, capsys):
    root, captioner = folders
    out = root / "traced"
    code = main(["trace", "--concepts", str(root / "wc"), "--through", str(root / "ic"), "--images",
                 str(root / "shapes"), "--n-images", "4", "--batch-size", "6", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["maps.safetensors", "trace.json", "trace.md"]
    assert not [p for p in root.iterdir() if p.name.startswith(".traced")]  # built beside, swapped in
    record = json.loads((out / "trace.json").read_text())
    word, image = load_concepts(root / "wc"), load_concepts(root / "ic")
    assert (record["word_layer"], record["image_layer"], record["token"]) == ("norm", "1", "circle")
    n = record["n_images"]
    assert 1 <= n <= 4 and len(record["images"]) == n and len(record["concepts"]) == word.n_concepts
    maps = load_file(str(out / "maps.safetensors"))
    meta = load_metadata(root / "word")
    store_rows = {m["image"]: i for i, m in enumerate(meta)}
    for i, entry in enumerate(record["images"]):
        assert "circle" in entry["caption"] and len(entry["boxes"]) == 64  # 64 image tokens per 64-px image
        assert tuple(maps[f"patches.{i}"].shape) == (word.n_concepts, 64, image.n_concepts)
    for c in record["concepts"]:
        means = [r["mean"] for r in c["ranking"]]
        assert means == sorted(means, reverse=True) and sorted(r["concept"] for r in c["ranking"]) == [0, 1, 2, 3]
        assert c["words"] == word.words(c["index"]) and c["ranking"][0]["words"] == image.words(c["ranking"][0]["concept"])
        for i in range(n):  # contributions + residual = the gradient x input total, image by image
            summed = sum(r["per_image"][i] for r in c["ranking"]) + c["residual"]["per_image"][i]
            assert summed == pytest.approx(c["total"][i], abs=1e-4)
            per_patch = maps[f"patches.{i}"][c["index"]].sum(0)   # the maps add up to the contributions
            for r in c["ranking"]:
                assert float(per_patch[r["concept"]]) == pytest.approx(r["per_image"][i], abs=1e-4)
        assert np.mean(c["residual"]["per_image"]) == pytest.approx(c["residual"]["mean"], abs=1e-4)
    # the spliced pass reads the word exactly as the store did: the activations are the store's own
    for i, entry in enumerate(record["images"]):
        image_path = str((out / entry["image"]).resolve())
        row = store_rows[image_path]
        for c in record["concepts"]:
            assert c["activation"][i] == pytest.approx(float(word.activations[row, c["index"]]), rel=1e-3, abs=1e-3)
    assert "agreement" in record and len(record["image_values"]) == image.n_concepts
    md = (out / "trace.md").read_text()
    assert md.count("\n| ") == word.n_concepts + 1 and "Agreement" in md
    # the report's section: every word concept active on a traced image, its top image concepts drawn
    from mmconcepts.report.trace_section import trace_section

    shown = trace_section(out)
    active = [c["index"] for c in record["concepts"] if max(c["activation"]) > 0]
    assert [r["index"] for r in shown["rows"]] == active
    for r in shown["rows"]:
        c = record["concepts"][r["index"]]
        assert [f["concept"] for f in r["feeds"]] == [x["concept"] for x in c["ranking"][:3]]
        assert all(f["map"].startswith("data:image/png;base64,") for f in r["feeds"])
    report = root / "report.html"
    assert main(["report", "--concepts", str(root / "wc"), "--trace", str(out), "--out", str(report)]) == 0
    assert report.read_text().count('alt="contribution of image concept') == 3 * len(active)
    (out / "maps.safetensors").write_bytes(b"not safetensors")
    capsys.readouterr()
    assert main(["report", "--concepts", str(root / "wc"), "--trace", str(out), "--out", str(root / "r2.html")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read") and not (root / "r2.html").exists()


@pytest.mark.slow
def test_teacher_store_reads_the_reference_captions(folders):
    """A word store read in teacher mode: the dataset's reference captions holding the word are read, and the
    traced activations are the store's own."""
    from mmconcepts.data import open_dataset
    from mmconcepts.workflows.trace import run_trace

    root, captioner = folders
    result = run_trace(root / "wct", root / "ic", root / "teacher-trace", dataset=root / "shapes", model=captioner,
                       settings=TraceSettings(n_images=3, batch_size=2))
    word = load_concepts(root / "wct")
    references = {str(s.image): s.captions for s in open_dataset(root / "shapes")}
    rows = {m["image"]: i for i, m in enumerate(load_metadata(root / "teacher"))}
    assert result.info["mode"] == "teacher" and len(result.images) == 3
    for i, t in enumerate(result.images):
        assert t.caption in references[t.image] and "circle" in t.caption
        np.testing.assert_allclose(t.trace.activation, word.activations[rows[t.image]].numpy(), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(t.trace.contributions.sum(1) + t.trace.residual, t.trace.total, atol=1e-6)
    assert json.loads((root / "teacher-trace" / "trace.json").read_text())["mode"] == "teacher"


def _refused(capsys, root, argv, match):
    out = root / "refused"
    code = main(["trace", *argv, "--images", str(root / "shapes"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and match in err, err
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".refused")]


@pytest.mark.slow
def test_refusals(folders, capsys):
    root, _ = folders
    wc, wc0, ic = (str(root / name) for name in ("wc", "wc0", "ic"))
    _refused(capsys, root, ["--concepts", wc0, "--through", ic], "not before the word concepts' layer 0")
    _refused(capsys, root, ["--concepts", ic, "--through", wc], "--concepts")         # an image folder as words
    _refused(capsys, root, ["--concepts", wc, "--through", wc0], "--positions image store")  # words as images
    _refused(capsys, root, ["--concepts", wc, "--through", ic, "--image", str(root / "shapes/images/000000.png")],
             "not both")


@pytest.mark.parametrize("method", ["semi-nmf", "pca", "topk-sae"])
def test_every_concepts_activation_at_once_is_each_ones_readout(method):
    """``activations_of`` (one solve per state) equals ``activation_of`` concept by concept, values and
    gradients, and the dictionary's own codes."""
    from types import SimpleNamespace

    from mmconcepts.attribution.readout import activation_of, activations_of
    from mmconcepts.decompose.base import one_sided
    from mmconcepts.decompose.registry import method_class

    Z = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    dictionary = method_class(method)(n_concepts=3, seed=0).fit(Z)
    signed = method == "pca"
    concepts = SimpleNamespace(dictionary=dictionary, signed=signed, n_concepts=6 if signed else 3)
    z = Z[:5].clone().requires_grad_(True)
    every = activations_of(concepts, z)
    torch.testing.assert_close(every.detach(), one_sided(dictionary.transform(Z[:5]), signed).float(), atol=1e-4,
                               rtol=1e-4)
    for k in range(concepts.n_concepts):
        one = activation_of(concepts, z, [k] * 5)
        torch.testing.assert_close(every[:, k], one, atol=1e-5, rtol=1e-5)
        (g_every,) = torch.autograd.grad(every[:, k].sum(), z, retain_graph=True)
        (g_one,) = torch.autograd.grad(one.sum(), z)
        torch.testing.assert_close(g_every, g_one, atol=1e-5, rtol=1e-5)
