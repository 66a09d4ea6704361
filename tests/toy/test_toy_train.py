"""Training the embedded captioner: a continued run from a checkpoint with another vocabulary."""

import json

import torch


def _old_tokenizer(words):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from mmconcepts.toy.build import SPECIAL_TOKENS

    vocab = {w: i for i, w in enumerate(list(SPECIAL_TOKENS) + words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def test_continued_run_keeps_the_rows_of_known_words(tmp_path):
    from mmconcepts.toy.build import SPECIAL_TOKENS, build_model, build_tokenizer
    from mmconcepts.toy.train import train

    new_vocab = build_tokenizer().get_vocab()
    # an older, smaller vocabulary in another order, with one word the new one lacks
    old_words = sorted((w for w, i in new_vocab.items() if i < 60 and w not in SPECIAL_TOKENS), reverse=True)
    old_words.append("zzzgone")
    old_tok = _old_tokenizer(old_words)
    old = build_model(old_tok, seed=1)
    old.save_pretrained(tmp_path / "old")
    old_tok.save_pretrained(tmp_path / "old")
    old_vocab = old_tok.get_vocab()

    card = train(tmp_path / "new", steps=1, batch_size=2, lr=0.0, eval_every=1, n_eval=2, warmup=1,
                 init_from=tmp_path / "old")
    assert card["step"] == 1 and (tmp_path / "new.log.jsonl").is_file()
    from transformers import LlavaForConditionalGeneration

    new = LlavaForConditionalGeneration.from_pretrained(tmp_path / "new", dtype=torch.float32)
    assert new.config.text_config.vocab_size == len(new_vocab)
    for module in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(old, module)().weight, getattr(new, module)().weight
        for word in ("circle", "<image>", old_words[0]):
            assert torch.equal(after[new_vocab[word]], before[old_vocab[word]]), (module, word)
        fresh = next(w for w in new_vocab if w not in old_vocab)  # a word the old model never had
        assert torch.allclose(after[new_vocab[fresh]], before.mean(dim=0), atol=1e-6)
    record = json.loads((tmp_path / "new.log.jsonl").read_text().splitlines()[-1])
    assert set(record["eval"]) >= {"shape", "colour", "size", "position", "exact"}


def test_bad_arguments_one_line_error_nothing_written(tmp_path, capsys):
    from mmconcepts.cli import main

    for args, message in ((["--init-from", str(tmp_path / "missing")], "no checkpoint there"),
                          (["--steps", "0"], "argument --steps: must be an integer >= 1"),
                          (["--lr", "-1"], "argument --lr: must be a number >= 0")):
        assert main(["train-toy", "--out", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert main(["train-toy", "--out", str(tmp_path / "out"), "--init-from", str(tmp_path / "broken")]) == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
