import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast

from mmconcepts.extract.token_match import WordMatcher


@pytest.fixture(scope="module")
def piece_tokenizer():
    """A byte-level BPE-like vocabulary where 'hotdog' and 'Dogs' take several pieces."""
    vocab = {w: i for i, w in enumerate(
        ["<unk>", "<s>", "A", "Ġa", "Ġdog", "Ġhot", "dog", "ĠDog", "s", "Ġcat", "Ġand", "Ġthe", ".", "Ġd", "og"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix=""))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


def ids(tok, pieces):
    return tok.convert_tokens_to_ids(pieces)


def test_whole_word_only(piece_tokenizer):
    m = WordMatcher("dog")
    # "A hotdog and the dog." -> the match is the second word-level dog, at the 'Ġdog' piece
    seq = ids(piece_tokenizer, ["A", "Ġhot", "dog", "Ġand", "Ġthe", "Ġdog", "."])
    index, word, text = m.first_piece(piece_tokenizer, seq)
    assert text == "A hotdog and the dog." and index == 5 and word == "dog"


def test_multi_piece_word_and_case(piece_tokenizer):
    m = WordMatcher("dog", also=["dogs"])
    seq = ids(piece_tokenizer, ["<s>", "A", "Ġd", "og", "s", "Ġand", "Ġa", "Ġcat"])
    index, word, _ = m.first_piece(piece_tokenizer, seq)
    assert (index, word) == (2, "dogs")  # the first piece of the word, skipping the special token
    seq = ids(piece_tokenizer, ["A", "ĠDog", "."])
    assert m.first_piece(piece_tokenizer, seq)[:2] == (1, "Dog")


def test_plural_needs_also(piece_tokenizer):
    seq = ids(piece_tokenizer, ["A", "Ġdog", "s"])
    assert WordMatcher("dog").first_piece(piece_tokenizer, seq) is None
    assert WordMatcher("dog", also=["dogs"]).first_piece(piece_tokenizer, seq)[0] == 1


def test_text_matching():
    m = WordMatcher("bus")
    assert m.find("A Bus, yellow") == (2, "Bus")
    assert m.find("a busy street") is None
    assert m.in_any(["nothing", "the bus."]) and not m.in_any(["omnibus"])
    with pytest.raises(ValueError):
        WordMatcher("  ")
