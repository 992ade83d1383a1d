"""Model construction, loading and checkpoint export (both scales)."""
from rocktokens.models.core import (
    VocabMismatchError,
    build_toy_model,
    check_same_vocab,
    final_hidden,
    load_model,
    load_tokenizer,
    output_weight,
    save_checkpoint,
    scoring_devices,
)

__all__ = [
    "VocabMismatchError",
    "build_toy_model",
    "check_same_vocab",
    "final_hidden",
    "load_model",
    "load_tokenizer",
    "output_weight",
    "save_checkpoint",
    "scoring_devices",
]
