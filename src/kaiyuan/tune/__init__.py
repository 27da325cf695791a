"""Fine-tuning: LoRA SFT of store models on chat data, with checkpoints, resume, eval and lineage.

torch, transformers and PEFT are imported only inside functions that train (``kaiyuan[tune]``); importing this
package, reading and validating data, and listing runs need none of them.
"""

from kaiyuan.tune._config import DEFAULT_TARGET_MODULES, TuneConfig
from kaiyuan.tune._data import FORMATS, Conversation, DataFile, detect_format, read_data_file
from kaiyuan.tune._loop import EvalResult
from kaiyuan.tune._render import (
    IGNORE_INDEX,
    PreparedData,
    Segment,
    TokenizedExample,
    conversation_segments,
    prepare_examples,
    tokenize_segments,
)
from kaiyuan.tune._runs import RunDir, RunSummary, find_resumable, list_runs
from kaiyuan.tune._tune import TuneResult, resume_tune, run_tune

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "FORMATS",
    "IGNORE_INDEX",
    "Conversation",
    "DataFile",
    "EvalResult",
    "PreparedData",
    "RunDir",
    "RunSummary",
    "Segment",
    "TokenizedExample",
    "TuneConfig",
    "TuneResult",
    "conversation_segments",
    "detect_format",
    "find_resumable",
    "list_runs",
    "prepare_examples",
    "read_data_file",
    "resume_tune",
    "run_tune",
    "tokenize_segments",
]
