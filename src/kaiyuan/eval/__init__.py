"""Model evaluation: perplexity over a text and KL divergence against a reference, measured with llama.cpp.

``evaluate`` scores a store model with llama-perplexity's method (windows of ``n_ctx`` tokens, the second half of
each scored) and records the figures on the model's manifest; ``describe_record`` turns a record into one line.
Importing this package loads neither llama.cpp nor the store: the scorer is imported when a model is scored.
"""

from kaiyuan.eval._corpus import DEFAULT_CORPUS, Corpus, read_corpus
from kaiyuan.eval._eval import EvalResult, evaluate
from kaiyuan.eval._method import Comparison, Perplexity, min_tokens
from kaiyuan.eval._record import describe_record

__all__ = [
    "DEFAULT_CORPUS",
    "Comparison",
    "Corpus",
    "EvalResult",
    "Perplexity",
    "describe_record",
    "evaluate",
    "min_tokens",
    "read_corpus",
]
