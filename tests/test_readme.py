"""The README's real-model commands, run as written with a tiny model and a tiny dataset in place of the hub
id and COCO: a README command that stops working fails the suite."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mmconcepts.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## A real model and dataset"


def readme_commands(section: str) -> list[list[str]]:
    """The ``mmconcepts`` command lines of the bash blocks of one README section (continuations joined)."""
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "mmconcepts":
                commands.append(words)
    return commands


def _dog_model(tiny_llava_dir, folder: Path) -> Path:
    """The tiny LLaVA, told by its generation config to say nothing but " dog" (a real model would say it of
    some images; a random one never does)."""
    from transformers import AutoTokenizer

    shutil.copytree(tiny_llava_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dog = tokenizer.encode(" dog", add_special_tokens=False)
    assert len(dog) == 1
    config = json.loads((folder / "generation_config.json").read_text())
    config["suppress_tokens"] = [i for i in range(len(tokenizer)) if i != dog[0]]
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


def _image(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40 + 3 * (i % 4), 32 + 2 * (i % 3)), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)) \
        .save(path, quality=90)


def _coco(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    """A Karpathy-style ``dataset_coco.json`` with COCO's folder layout; every caption names a dog."""
    images = []
    for i in range(n_train + n_test):
        split, folder = ("train", "train2014") if i < n_train else ("test", "val2014")
        name = f"COCO_{folder}_{i:012d}.jpg"
        _image(root / "coco" / folder / name, i)
        images.append({"filepath": folder, "filename": name, "split": split, "cocoid": i,
                       "sentences": [{"raw": f"a dog number {i} on the grass"}, {"raw": "the dog runs"}]})
    _image(root / "coco" / "val2014" / "COCO_val2014_000000000042.jpg", 42)
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    return root / "dataset_coco.json"


def _coco_hf(root: Path, n: int = 6) -> Path:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "sentences": datasets.Sequence(datasets.Value("string"))})
    images = [Image.new("RGB", (36, 36), (20 * i, 100, 200 - 20 * i)) for i in range(n)]
    split = datasets.Dataset.from_dict({"image": images, "sentences": [["a dog", "the dog sits"]] * n},
                                       features=features)
    datasets.DatasetDict({"validation": split}).save_to_disk(str(root / "coco-hf"))
    return root / "coco-hf"


@pytest.mark.slow
def test_readme_real_model_commands_run_as_written(tiny_llava_dir, tiny_clip_dir, minilm_dir, tmp_path,
                                                   monkeypatch, capsys):
    commands = readme_commands(SECTION)
    assert len(commands) >= 7 and any("--layers" in c and "-1,norm" in c for c in commands)
    model = _dog_model(tiny_llava_dir, tmp_path / "llava-dog")
    coco = _coco(tmp_path)
    hf = _coco_hf(tmp_path)
    places = {"llava-hf/llava-1.5-7b-hf": str(model), "path/to/dataset_coco.json": str(coco),
              "path/to/coco-hf": str(hf), "openai/clip-vit-base-patch32": str(tiny_clip_dir),
              "roberta-large": str(minilm_dir)}
    monkeypatch.chdir(tmp_path)
    for words in commands:
        args = [places.get(w, w) for w in words[1:]]
        args = [a.replace("path/to/coco", str(tmp_path / "coco")) for a in args]
        args = ["cpu" if a == "cuda" and args[i - 1] == "--device" else a for i, a in enumerate(args)]
        code = main(args)
        captured = capsys.readouterr()
        assert code == 0, f"{' '.join(words)}\n{captured.err}"
    manifest = json.loads((tmp_path / "runs" / "dog-train" / "manifest.json").read_text())
    assert manifest["layers"] == ["2", "norm"] and manifest["also"] == ["dogs"]
    assert manifest["model_options"]["model_dtype"] == "bfloat16" and manifest["split"] == "train"
    concepts = json.loads((tmp_path / "runs" / "dog-concepts" / "summary.json").read_text())
    assert concepts["n_concepts"] == 20 and concepts["layer"] == "norm"
    grounding = json.loads((tmp_path / "runs" / "dog-concepts" / "grounding.json").read_text())
    assert not {"dog", "dogs"} & {w["word"] for c in grounding["concepts"] for w in c["words"]}
    assert (tmp_path / "dog.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "runs" / "dog-hf" / "manifest.json").read_text())["counts"]["kept"] == 6


@pytest.mark.slow
def test_readme_image_token_commands_run_as_written(tmp_path, monkeypatch):
    """The commands of "Concepts where the model keeps them", in order, on a small ShapesWorld pair, with the
    word concepts they trace made first (the section takes them from the rest of the README)."""
    monkeypatch.chdir(tmp_path)
    setup = [["shapesworld", "--out", "shapes/train", "--n", "40", "--seed", "0", "--split", "train"],
             ["shapesworld", "--out", "shapes/test", "--n", "16", "--seed", "1", "--split", "test"],
             ["extract", "--data", "shapes/train", "--token", "circle", "--layers", "norm", "--out", "runs/word"],
             ["learn", "--features", "runs/word", "-k", "6", "--out", "runs/word-concepts"]]
    for argv in setup:
        assert main(argv) == 0, argv
    commands = readme_commands("## Concepts where the model keeps them")
    assert [c[1] for c in commands] == ["extract", "extract", "learn", "explain", "evaluate", "trace", "learn",
                                        "trace"]
    for words in commands:
        argv = words[1:] + (["--causal-images", "8"] if words[1] == "evaluate" else [])
        assert main(argv) == 0, " ".join(words)
    assert json.loads(Path("runs/trace/trace.json").read_text())["pair"] == "word->image"
    assert json.loads(Path("runs/vision-trace/trace.json").read_text())["pair"] == "image->vision"
    assert json.loads(Path("runs/vision-concepts/grounding.json").read_text())["decode"] == "caption"
