"""Extraction on the tiny offline models of every family: both modes, several layers, the keep rule."""

import json
import re
from collections import Counter

import pytest
import torch

from mmconcepts.data import open_dataset
from mmconcepts.errors import MMConceptsError
from mmconcepts.extract import extract, load_features, read_manifest

FAMILIES = ("llava", "qwen2_vl", "idefics3")
LAYERS = ["0", "-1", "norm"]


def _hidden_states(adapter, image, text):
    inputs = adapter.encode([image], [text])
    with torch.no_grad():
        out = adapter.model(**inputs, output_hidden_states=True)
    return inputs["input_ids"][0], out.hidden_states


def _generated_word(adapter, dataset):
    """The most frequent whole word (letters only) in the model's greedy captions of the dataset."""
    captions = adapter.caption([s.load() for s in dataset], max_new_tokens=12)
    words = Counter(w for c in captions for w in re.findall(r"(?<!\w)[A-Za-z]+(?!\w)", c))
    assert words, f"the tiny model generated no word: {captions}"
    return words.most_common(1)[0][0], captions


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_mode_reads_the_state_that_predicts_the_word(family, tiny_adapters, images_dataset, tmp_path):
    adapter = tiny_adapters[family]
    manifest = extract(images_dataset, "dog", out=tmp_path / "s", model=adapter, layers=LAYERS, mode="teacher",
                       batch_size=3, dtype="float32", progress=False)
    assert manifest["counts"]["kept"] == 8 and manifest["layers"] == ["0", str(adapter.num_layers - 1), "norm"]
    Z_norm, meta = load_features(tmp_path / "s", "norm")
    Z_first, _ = load_features(tmp_path / "s", "0")
    assert meta[0]["caption"] == "a dog on the grass" and meta[0]["word"] == "dog"
    # recompute one sample alone: the state at the position before the first piece of " dog"
    sample = open_dataset(images_dataset)[4]
    prompt = adapter.prompt()
    sep = "" if prompt[-1].isspace() else " "  # as extraction joins prompt and caption
    ids, states = _hidden_states(adapter, sample.load(), prompt + sep + "a dog on the grass")
    dog = adapter.tokenizer.convert_tokens_to_ids("Ġdog")
    position = ids.tolist().index(dog) - 1
    assert torch.allclose(Z_first[4], states[1][0, position], atol=1e-4)
    assert torch.allclose(Z_norm[4], states[-1][0, position], atol=5e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_mode_records_every_layer_in_one_pass(family, tiny_adapters, images_dataset, tmp_path):
    adapter = tiny_adapters[family]
    dataset = open_dataset(images_dataset)
    word, captions = _generated_word(adapter, dataset)
    manifest = extract(dataset, word, out=tmp_path / "s", model=adapter, layers=LAYERS, keep="generated",
                       max_new_tokens=12, batch_size=3, dtype="float32", progress=False)
    expected = sum(bool(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", c, re.I)) for c in captions)
    assert manifest["counts"]["kept"] == expected
    assert manifest["counts"]["not_generated"] == 8 - expected
    Z, meta = load_features(tmp_path / "s", "norm")
    Z0, _ = load_features(tmp_path / "s", "0")
    for i, row in enumerate(meta):
        # the same image alone: generate's own hidden states at the step that produced the word's first piece
        inputs = adapter.encode([dataset[row["index"]].load()], [adapter.prompt()])
        with torch.no_grad():
            out = adapter.model.generate(**inputs, max_new_tokens=12, do_sample=False, output_hidden_states=True,
                                         return_dict_in_generate=True)
        step = out.hidden_states[row["position"]]  # tuple: embeddings, layer outputs (last one normed)
        assert torch.allclose(Z0[i], step[1][0, -1], atol=1e-4)
        assert torch.allclose(Z[i], step[-1][0, -1], atol=5e-3)
        assert word.lower() in row["caption"].lower()


def test_keep_rule_needs_the_word_in_a_reference(tiny_adapters, images_dataset, tmp_path):
    adapter = tiny_adapters["llava"]
    word, _ = _generated_word(adapter, open_dataset(images_dataset))
    with pytest.raises(MMConceptsError, match="kept in no image.*generated but not in references [1-9]"):
        extract(images_dataset, word, out=tmp_path / "s", model=adapter, max_new_tokens=12, progress=False)
    assert not (tmp_path / "s").exists()  # no empty store left behind
    manifest = extract(images_dataset, word, out=tmp_path / "s", model=adapter, max_new_tokens=12,
                       keep="generated", progress=False)
    assert manifest["counts"]["kept"] > 0 and manifest["keep"] == "generated"


def test_multi_piece_word_in_teacher_mode(tiny_adapters, tmp_path):
    from tests.fixtures.datasets import write_images_dataset

    adapter = tiny_adapters["llava"]
    data = write_images_dataset(tmp_path / "d", n=3, captions=("the hotdog stand", "a cat"))
    extract(data, "hotdog", out=tmp_path / "s", model=adapter, mode="teacher", dtype="float32", progress=False)
    _, meta = load_features(tmp_path / "s", "norm")
    pieces = adapter.tokenizer.tokenize(" hotdog")
    assert len(pieces) > 1 and meta[0]["word"] == "hotdog"
    # "dog" is not a whole word in "the hotdog stand": only the second caption could hold it, and it does not
    with pytest.raises(MMConceptsError, match="kept in no image"):
        extract(data, "dog", out=tmp_path / "t", model=adapter, mode="teacher", progress=False)


def test_bad_inputs(tiny_adapters, images_dataset, tmp_path):
    adapter = tiny_adapters["llava"]
    with pytest.raises(MMConceptsError, match="unknown layer '7'.*valid layers are"):
        extract(images_dataset, "dog", out=tmp_path / "s", model=adapter, layers=["7"], progress=False)
    assert not (tmp_path / "s").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MMConceptsError, match="--resume.*--overwrite"):
        extract(images_dataset, "dog", out=tmp_path / "full", model=adapter, mode="teacher", progress=False)
    with pytest.raises(MMConceptsError, match="one word"):
        extract(images_dataset, "hot dog", out=tmp_path / "s", model=adapter, progress=False)
    (images_dataset / "images" / "2.png").write_bytes(b"not a png")
    (images_dataset / "images" / "5.png").unlink()
    manifest = extract(images_dataset, "dog", out=tmp_path / "s", model=adapter, mode="teacher", progress=False)
    assert manifest["counts"]["skipped_images"] == 2 and manifest["counts"]["kept"] == 6
    with pytest.raises(MMConceptsError, match="cannot read image .*2.png"):
        extract(images_dataset, "dog", out=tmp_path / "t", model=adapter, mode="teacher", strict=True,
                progress=False)
    assert not (tmp_path / "t").exists()


def test_manifest_and_metadata(tiny_adapters, images_dataset, tmp_path):
    adapter = tiny_adapters["qwen2_vl"]
    extract(images_dataset, "dog", out=tmp_path / "s", model=adapter, mode="teacher", dtype="bfloat16",
            shard_size=3, batch_size=2, progress=False)
    manifest = read_manifest(tmp_path / "s")
    for key in ("model", "layers", "token", "mode", "dtype", "hidden_size", "counts", "mmconcepts_version"):
        assert key in manifest
    assert manifest["dtype"] == "bfloat16" and manifest["n_shards"] == 2 and manifest["complete"]  # 4 + 4: shards close at batch ends
    rows = [json.loads(line) for line in (tmp_path / "s" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"id", "image", "caption", "references", "position"} <= set(rows[0])
