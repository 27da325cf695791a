"""GGUF → Hugging Face folder: dequantize a GGUF model with transformers and save it as safetensors.

Owns: loading the GGUF through transformers' own GGUF reader (``from_pretrained(..., gguf_file=...)``, which
dequantizes every tensor and undoes llama.cpp's Q/K row permutation), rebuilding the model from its config
without the GGUF ``quantization_config`` so that ``save_pretrained`` writes plain weights in the requested dtype,
the tokenizer (with the GGUF's chat template in ``tokenizer_config.json``), and writing all of it atomically: a
hidden sibling folder renamed into place when complete. Must not know: the store, names, licenses beyond copying
the GGUF's ``general.license`` into the card's front matter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kaiyuan.errors import ExportError, InvalidModelFile, MissingExtra
from kaiyuan.gguf import GGUFInfo, read_gguf

__all__ = ["HF_DTYPES", "gguf_to_hf"]

log = logging.getLogger(__name__)

#: dtype names ``gguf_to_hf`` accepts (what ``config.json``'s ``dtype`` will say).
HF_DTYPES = ("bfloat16", "float16", "float32")

Progress = Callable[
    [str, int, int], None
]  # (step name, done, total): tensors while dequantizing, else 0/1, 1/1


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingExtra("tune", feature="converting between GGUF and Hugging Face format") from exc
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError as exc:
        raise MissingExtra("tune", feature="reading a GGUF with transformers") from exc
    return torch, transformers


@contextlib.contextmanager
def quiet_transformers(progress: Progress | None = None) -> Iterator[None]:
    """Silence transformers' and torch's chatter while converting (deprecations, 'some weights were not used',
    progress bars); the GGUF reader's own tensor loop reports to ``progress`` as "dequantizing" instead."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar = getattr(gguf_utils, "tqdm", None)

    def report(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        for index, item in enumerate(items):
            yield item
            if progress is not None:
                progress("dequantizing", index + 1, len(items))

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # kaiyuan shows its own progress
    if bar is not None:
        gguf_utils.tqdm = report  # its tensor loop uses tqdm directly, not transformers' switch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gguf_in_folder(gguf_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, file name) transformers can open: the file itself when it ends in ``.gguf``, else a symbolic link
    named ``model.gguf`` in a temporary folder (store blobs are named by digest)."""
    if gguf_path.suffix == ".gguf":
        yield gguf_path.parent, gguf_path.name
        return
    with tempfile.TemporaryDirectory(prefix="kaiyuan-gguf-") as tmp:
        link = Path(tmp) / "model.gguf"
        try:
            link.symlink_to(gguf_path)
        except OSError:
            shutil.copyfile(gguf_path, link)
        yield Path(tmp), link.name


def _card(info: GGUFInfo) -> str:
    """A minimal model card whose front matter keeps the GGUF's license and name (the license guard reads it)."""
    lines = ["---"]
    license_id = info.get("general.license")
    if isinstance(license_id, str) and license_id.strip():
        lines.append(f"license: {json.dumps(license_id.strip())}")
    for key, field in (("general.license.name", "license_name"), ("general.license.link", "license_link")):
        value = info.get(key)
        if isinstance(value, str) and value.strip():
            lines.append(f"{field}: {json.dumps(value.strip())}")
    lines.append("library_name: transformers")
    lines.append("---")
    name = info.get("general.name")
    title = name if isinstance(name, str) and name.strip() else "Converted model"
    lines += ["", f"# {title}", "", "Converted from GGUF by `kaiyuan convert` (weights dequantized).", ""]
    return "\n".join(lines)


def gguf_to_hf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: str = "bfloat16",
    progress: Progress | None = None,
) -> Path:
    """Write the GGUF model ``gguf_path`` as a Hugging Face folder at ``out_dir``; returns ``out_dir``.

    ``dtype`` is one of ``HF_DTYPES``. ``out_dir`` must not exist yet (or be an empty folder); it appears
    complete or not at all. Architectures are those transformers can read from GGUF (llama, qwen2, qwen3,
    mistral, gemma, phi3 ...); another one raises ExportError naming it. ``progress`` hears each step (see ``Progress``).
    """
    if dtype not in HF_DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(HF_DTYPES)}")
    source = Path(gguf_path).expanduser().absolute()
    dest = Path(out_dir).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} already exists and is not empty; choose another output folder")
    info = read_gguf(source)
    if info.kind != "model":
        raise InvalidModelFile(
            f"{source}: general.type is {info.kind!r}; only models convert to Hugging Face"
        )
    torch, transformers = _import_transformers()
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if info.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        supported = ", ".join(sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if isinstance(a, str)))
        raise ExportError(
            f"transformers cannot read GGUF architecture {info.architecture!r}; it reads: {supported}"
        )

    def step(name: str) -> None:
        if progress is not None:
            progress(name, 0, 1)

    torch_dtype = getattr(torch, dtype)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with quiet_transformers(progress), _gguf_in_folder(source) as (folder, file_name):
            gguf_config = transformers.AutoConfig.from_pretrained(str(folder), gguf_file=file_name)
            _fix_head_dim(gguf_config, info)
            loaded = transformers.AutoModelForCausalLM.from_pretrained(
                str(folder), gguf_file=file_name, config=gguf_config, dtype=torch.float32
            )
            config = loaded.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")
            config.dtype = torch_dtype
            step("building")
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
            missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
            # A tied output head is not a separate tensor; anything else missing is a conversion error.
            missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
            if missing or unexpected:
                raise ExportError(
                    f"{source.name}: the converted weights do not fit the {info.architecture} model "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            model.generation_config = loaded.generation_config
            del loaded
            step("saving weights")
            model.save_pretrained(str(tmp), safe_serialization=True)
            del model
            step("saving tokenizer")
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=file_name)
            template = info.chat_template
            if template is not None:
                tokenizer.chat_template = template
            tokenizer.save_pretrained(str(tmp))
        _patch_tokenizer_config(tmp, info)
        (tmp / "README.md").write_text(_card(info), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _fix_head_dim(config: Any, info: GGUFInfo) -> None:
    """Set ``head_dim`` the way llama.cpp reads it: ``<arch>.attention.key_length``, else embedding / heads.
    (transformers' GGUF mapping skips key_length for some architectures, qwen3 among them, and then keeps the
    config class's default head size, which is wrong for any model whose heads are not that size.)"""
    if not hasattr(config, "head_dim"):
        return
    arch = info.architecture
    key_length = info.get(f"{arch}.attention.key_length")
    heads = getattr(config, "num_attention_heads", 0)
    if isinstance(key_length, int) and key_length > 0:
        config.head_dim = key_length
    elif heads:
        config.head_dim = config.hidden_size // heads


def _patch_tokenizer_config(folder: Path, info: GGUFInfo) -> None:
    """Make ``tokenizer_config.json`` readable by more than the transformers that wrote it: the chat template in
    it too (transformers 5 writes ``chat_template.jinja``; older readers look in the config), the portable
    ``PreTrainedTokenizerFast`` class name, the GGUF's ``add_bos_token`` / ``add_eos_token`` (so that a
    conversion back writes them again), and none of the loader's own bookkeeping keys."""
    path = folder / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the tokenizer config transformers wrote ({exc})") from exc
    if info.chat_template is not None:
        config["chat_template"] = info.chat_template
    for key in ("add_bos_token", "add_eos_token"):
        value = info.get(f"tokenizer.ggml.{key}")
        if isinstance(value, bool):
            config[key] = value
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
