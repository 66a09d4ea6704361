"""The embedded ShapesWorld captioner: its tokenizer, processor and LLaVA architecture.

The model is a plain ``LlavaForConditionalGeneration`` (a small CLIP vision tower, a small Llama decoder)
with a word-level tokenizer over the ShapesWorld vocabulary and a chat template, so it loads through the
same adapter path as any LLaVA checkpoint from the Hugging Face hub.
"""

from __future__ import annotations

from mmconcepts.data.shapesworld import IMAGE_SIZE, vocabulary

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
PROMPT_WORDS = ("user", "assistant", ":", "provide", "a", "one", "-", "sentence", "caption", "for", "the",
                "provided", "image", ".")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
PATCH_SIZE = 8
#: Size of the tokenizer's vocabulary. Beyond the caption and instruction words it holds the most frequent
#: English words (``wordfreq``), as a real language model's vocabulary does: the captioner never says them,
#: but a concept decoded through its unembedding has to single out its words among all of them.
VOCAB_SIZE = 2048


def vocabulary_words() -> list[str]:
    """The tokenizer's words in id order (after the special tokens): the world's and the instruction's words,
    then frequent English words up to :data:`VOCAB_SIZE` tokens."""
    from wordfreq import top_n_list

    words = sorted(set(vocabulary()) | set(PROMPT_WORDS))
    known = set(words)
    n_more = VOCAB_SIZE - len(SPECIAL_TOKENS) - len(words)
    extra = [w for w in top_n_list("en", 10 * VOCAB_SIZE) if w.isascii() and w.isalpha() and w not in known]
    return words + extra[:n_more]


def build_tokenizer():
    """A word-level tokenizer (lower-cased, punctuation split off) over :func:`vocabulary_words`."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + vocabulary_words()
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=256,
    )


def build_processor():
    """The LLaVA processor: CLIP image processing at 64 px, the tokenizer and the chat template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        do_resize=True,
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )


def build_model(tokenizer, seed: int = 0):
    """A randomly initialised ~2.5M-parameter LLaVA: CLIP 128-wide x 4 layers, Llama 192-wide x 4 layers."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=128,
    )
    text = LlamaConfig(
        hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=6,
        num_key_value_heads=6, vocab_size=len(tokenizer), max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    gc.do_sample = False
    gc.max_new_tokens = 50
    return model
