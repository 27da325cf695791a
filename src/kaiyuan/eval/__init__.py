"""Model evaluation: perplexity over a text, the cost against a reference, and held-out chats, measured.

``evaluate`` scores a store model with llama-perplexity's method (windows of ``n_ctx`` tokens, the second half of
each scored) and records the figures on the model's manifest; ``evaluate_chats`` scores a tuned model on held-out
chats (assistant-token loss, answer match) beside its base; ``measure_cost`` is the quick measurement ``kaiyuan
export --quant`` and ``kaiyuan convert`` make; ``describe_record`` turns a record into one line. Importing this
package loads neither llama.cpp nor the store: the scorers are imported when a model is scored.
"""

from kaiyuan.eval._chat_eval import ChatEvalResult, ChatScore, evaluate_chats
from kaiyuan.eval._chats import ChatCase, ChatFile, Check, read_chat_file
from kaiyuan.eval._corpus import DEFAULT_CORPUS, Corpus, read_corpus
from kaiyuan.eval._cost import QUICK_CTX, QUICK_WINDOWS, Cost, measure_cost
from kaiyuan.eval._eval import EvalResult, evaluate, side_of
from kaiyuan.eval._method import Comparison, Perplexity, min_tokens
from kaiyuan.eval._record import describe_record
from kaiyuan.eval._sides import Side

__all__ = [
    "DEFAULT_CORPUS",
    "QUICK_CTX",
    "QUICK_WINDOWS",
    "ChatCase",
    "ChatEvalResult",
    "ChatFile",
    "ChatScore",
    "Check",
    "Comparison",
    "Corpus",
    "Cost",
    "EvalResult",
    "Perplexity",
    "Side",
    "describe_record",
    "evaluate",
    "evaluate_chats",
    "measure_cost",
    "min_tokens",
    "read_chat_file",
    "read_corpus",
    "side_of",
]
