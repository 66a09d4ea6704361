"""Several words of interest in one pass, and images fed by DataLoader workers: the same rows as one word at a
time in the main process, bit for bit."""

import json
import re
from collections import Counter

import pytest
import torch
from PIL import Image

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_captions, load_features, load_metadata
from tests.fixtures.datasets import write_images_dataset


def _words(adapter, data, n=2, max_new_tokens=16):
    images = [Image.open(p).convert("RGB") for p in sorted((data / "images").glob("*.png"))]
    captions = adapter.caption(images, max_new_tokens=max_new_tokens)
    counts = Counter(w.lower() for c in captions for w in set(re.findall(r"(?<!\w)[A-Za-z]{3,}(?!\w)", c)))
    return [w for w, _ in counts.most_common(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_images_dataset(tmp_path_factory.mktemp("multi") / "data", n=10)


@pytest.mark.parametrize("mode", ["generate", "teacher"])
def test_rows_of_a_word_equal_a_single_word_run(tiny_adapters, data, tmp_path, mode):
    adapter = tiny_adapters["llava"]
    words = _words(adapter, data) if mode == "generate" else ["dog", "grass"]
    common = dict(model=adapter, layers=["0", "norm"], mode=mode, keep="generated", batch_size=3,
                  max_new_tokens=16, dtype="float32", progress=False)
    both = extract(data, ",".join(words), out=tmp_path / "both", also={words[0]: [words[0] + "s"]}, **common)
    assert both["tokens"] == words and both["also"] == {words[0]: [words[0] + "s"], words[1]: []}
    for word in words:
        alone = extract(data, word, out=tmp_path / word, also=[word + "s"] if word == words[0] else [], **common)
        assert both["counts"]["tokens"][word] == {k: alone["counts"][k] for k in both["counts"]["tokens"][word]}
        for layer in ("0", "norm"):
            Z_both, meta_both = load_features(tmp_path / "both", layer, token=word)
            Z_alone, meta_alone = load_features(tmp_path / word, layer)
            assert Z_alone.shape[0] > 0 and torch.equal(Z_both, Z_alone)
            assert meta_both == meta_alone and all(m["token"] == word for m in meta_both)
    assert both["counts"]["kept"] == sum(c["kept"] for c in both["counts"]["tokens"].values())
    if mode == "generate":  # each image captioned once, whatever the number of words
        assert [c["index"] for c in load_captions(tmp_path / "both")] == list(range(10))


def test_a_store_of_several_words_needs_a_token(tiny_adapters, data, tmp_path, capsys):
    extract(data, "dog,grass", out=tmp_path / "s", model=tiny_adapters["llava"], mode="teacher", dtype="float32",
            progress=False)
    with pytest.raises(MMConceptsError, match="holds the tokens dog, grass: choose one with --token"):
        load_features(tmp_path / "s", "norm")
    with pytest.raises(MMConceptsError, match="token 'cat' is not in"):
        load_metadata(tmp_path / "s", token="cat")
    assert len(load_metadata(tmp_path / "s", token="grass")) == 10
    assert main(["learn", "--features", str(tmp_path / "s"), "-k", "2", "--out", str(tmp_path / "c"),
                 "--no-ground"]) == 2
    assert "choose one with --token" in capsys.readouterr().err
    assert main(["learn", "--features", str(tmp_path / "s"), "--token", "grass", "-k", "2", "--out",
                 str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["token"] == "grass"
    assert main(["explain", "--concepts", str(tmp_path / "c"), "--image", str(data / "images" / "0.png"),
                 "--mode", "teacher", "--caption", "the dog on the grass"]) == 0


@pytest.mark.parametrize("also, message", [
    (["dogs"], "say whose variants they are, e.g. --also dog=dogs"),
    (["cat=cats"], "names 'cat', which is not a --token"),
])
def test_also_of_several_words_names_its_word(tiny_llava_dir, data, tmp_path, capsys, also, message):
    argv = ["extract", "--model", str(tiny_llava_dir), "--data", str(data), "--token", "dog,grass", "--out",
            str(tmp_path / "s"), "--mode", "teacher"]
    for value in also:
        argv += ["--also", value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "s").exists()


def test_dataloader_workers_feed_the_same_rows(tiny_adapters, tmp_path):
    """Images read in 2 worker processes: the same features, rows, captions and counts as in the main process,
    a broken image skipped and counted the same."""
    data = write_images_dataset(tmp_path / "data", n=9)
    adapter = tiny_adapters["llava"]
    word = _words(adapter, data, n=1, max_new_tokens=12)[0]
    (data / "images" / "4.png").write_bytes(b"not a png")
    runs = {}
    for workers in (0, 2):
        runs[workers] = extract(data, word, out=tmp_path / f"w{workers}", model=adapter, keep="generated",
                                batch_size=2, max_new_tokens=12, dtype="float32", num_workers=workers,
                                progress=False)
    assert runs[0]["counts"] == runs[2]["counts"] and runs[0]["counts"]["skipped_images"] == 1
    Z0, m0 = load_features(tmp_path / "w0", "norm")
    Z2, m2 = load_features(tmp_path / "w2", "norm")
    assert torch.equal(Z0, Z2) and m0 == m2
    assert load_captions(tmp_path / "w0") == load_captions(tmp_path / "w2")
    assert 4 not in [c["index"] for c in load_captions(tmp_path / "w2")]
    with pytest.raises(MMConceptsError, match="cannot read image"):
        extract(data, word, out=tmp_path / "strict", model=adapter, num_workers=2, strict=True, progress=False)
    assert not (tmp_path / "strict").exists()
