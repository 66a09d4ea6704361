"""Ship a trained ShapesWorld captioner into the package: half-precision weights, processor, model card.

    python scripts/ship_toy.py runs/toy LINEAGE.md runs/toy.log.jsonl [more logs of continued runs, in order]

It scores the checkpoint on 500 held-out images of a new seed (the issue's quality bar), saves the weights
as float16 safetensors into ``src/mmconcepts/assets/shapesworld-llava`` (loaded back as float32), and writes
the model card (README.md) from the lineage text (a file: which runs, in which world, with which commands),
the training logs and the score.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "src" / "mmconcepts" / "assets" / "shapesworld-llava"
HELD_OUT_SEED = 12345


def main(checkpoint: str, lineage: str, *logs: str) -> int:
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from mmconcepts.data.shapesworld import write_dataset
    from mmconcepts.evaluation.captioning import score_model
    from mmconcepts.models import ModelOptions

    checkpoint = Path(checkpoint)
    per_log = [[json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()] for log in logs]
    runs = [r for records in per_log for r in records]
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
    processor = LlavaProcessor.from_pretrained(checkpoint)
    tmp = Path(tempfile.mkdtemp())
    try:
        model.to(torch.float16).save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        write_dataset(tmp / "held-out", n=500, seed=HELD_OUT_SEED, split="test")
        score = score_model(tmp / "held-out", model=ModelOptions(model=str(tmp / "model"), device="cpu"), progress=False)
        score.pop("model")
        print(json.dumps(score, indent=2))
        card = (Path(__file__).parent / "toy_model_card.md").read_text().format(
            params=sum(p.numel() for p in model.parameters()),
            size_mb=sum(f.stat().st_size for f in (tmp / "model").iterdir()) / 2**20,
            score=json.dumps(score, indent=2), held_out_seed=HELD_OUT_SEED,
            lineage=Path(lineage).read_text().strip(),
            log="\n".join(json.dumps({k: r[k] for k in ("step", "loss", "seconds", "eval") if k in r})
                          for r in runs),
            training="\n".join(json.dumps({k: v for k, v in records[-1].items() if k != "eval"})
                               for records in per_log if records))
        (tmp / "model" / "README.md").write_text(card)
        if ASSETS.exists():
            shutil.rmtree(ASSETS)
        shutil.copytree(tmp / "model", ASSETS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"shipped to {ASSETS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
