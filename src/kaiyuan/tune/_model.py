"""Loading the base model for training: torch, transformers and PEFT live behind this module's functions.

Owns the lazy heavy imports (a missing extra is ``MissingExtra("tune")``), the device choice (CUDA when present),
loading a GGUF base through transformers' GGUF support (dequantized to float) or an HF-layout folder directly,
attaching LoRA with PEFT, and the tokenizer-with-offsets the renderer needs. Knows nothing of data formats, runs or
the store.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.errors import MissingExtra, TuneError

__all__ = [
    "LoadedBase",
    "attach_lora",
    "foreign_warnings_quiet",
    "import_torch",
    "load_base",
    "pick_device",
    "tokenize_with_offsets",
]

log = logging.getLogger(__name__)


def import_torch() -> Any:
    """``import torch`` (and check transformers + peft are there too), or raise MissingExtra('tune')."""
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("tune", feature="fine-tuning") from exc
    return torch


@contextlib.contextmanager
def foreign_warnings_quiet() -> Iterator[None]:
    """Silence deprecation chatter that transformers/PEFT emit about each other (not ours to fix or show)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*config file.*vocabulary was not modified.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        yield


def pick_device(spec: str) -> tuple[Any, Any]:
    """(torch.device, compute dtype): CUDA when present (bf16 where supported), else CPU float32."""
    torch = import_torch()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise TuneError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return device, dtype


@dataclass
class LoadedBase:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers fast tokenizer
    chat_template: str | None  # Jinja source from the model file
    bos_token: str
    eos_token: str
    pad_id: int
    architecture: str  # transformers model_type, e.g. "llama"


def load_base(model_path: Path, device: Any, dtype: Any) -> LoadedBase:
    """Load a GGUF file (dequantized) or an HF-layout folder as a causal LM plus its tokenizer."""
    import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # kaiyuan prints its own progress; tqdm bars would interleave with it

    model_path = Path(model_path)
    if model_path.is_dir():
        kwargs: dict[str, Any] = {}
        where = str(model_path)
    elif model_path.is_file():
        kwargs = {"gguf_file": model_path.name}
        where = str(model_path.parent)
    else:
        raise TuneError(f"base model file {model_path} is missing; check the store (`kaiyuan show`)")
    try:
        with foreign_warnings_quiet(), _gguf_tqdm_off():
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TuneError(f"transformers cannot load {model_path} for training: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise TuneError(f"{model_path}: training needs a fast tokenizer (character offsets for loss masking)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise TuneError(f"{model_path}: the tokenizer has neither a pad nor an end-of-sequence token")
    model.to(device)
    return LoadedBase(
        model=model,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None),
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
        pad_id=int(pad_id),
        architecture=str(model.config.model_type),
    )


@contextlib.contextmanager
def _gguf_tqdm_off() -> Iterator[None]:
    """transformers' GGUF loader draws its own tqdm bar (not switchable by its logging); silence it while loading."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character spans; special tokens in the text are parsed as such (as at inference)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def attach_lora(
    model: Any, *, rank: int, alpha: float, dropout: float, target_modules: list[str], seed: int
) -> Any:
    """Wrap ``model`` with trainable LoRA matrices (PEFT); everything else is frozen."""
    torch = import_torch()
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in present]
    if missing:
        raise TuneError(
            f"the base model has no layers named {missing}; its linear layers are e.g. {sorted(present)[:12]}"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT annotates int, accepts float
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # LoRA A matrices are initialised randomly; B starts at zero
    with foreign_warnings_quiet():
        return get_peft_model(model, config)
