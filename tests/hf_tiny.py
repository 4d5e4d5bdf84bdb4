"""Tiny transformers models built here (random weights from small configs, no hub), saved with save_pretrained:
what a user's Hugging Face model directory looks like.  Import as `from hf_tiny import ...`."""

from pathlib import Path

WORDS = ["planner", "measures", "each", "candidate", "deployment", "of", "this", "model", "on", "the", "target",
         "hello", "world", "fast", "slow", "."]


def bert_classifier(d: Path, tokenizer: bool = True) -> Path:
    """A 2-layer BERT with a 3-class head and a WordPiece tokenizer (tokenizer.json)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    BertForSequenceClassification(cfg).eval().save_pretrained(d)
    if tokenizer:
        BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=16).save_pretrained(d)
    return d


def vit_classifier(d: Path, processor: bool = True) -> Path:
    """A 2-layer ViT on 3x16x16 images (patch 8) with a 5-class head, and its image processor's config."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    ViTForImageClassification(cfg).eval().save_pretrained(d)
    if processor:
        ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(d)
    return d


def gpt2_decoder(d: Path) -> Path:
    """A 2-layer GPT-2 causal LM (vocabulary 64, context 32)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(cfg).eval().save_pretrained(d)
    return d
