"""Export: adapters to GGUF LoRA files llama.cpp loads, LoRA merged into the base GGUF and quantized by
llama.cpp, and release bundles with LICENSE, NOTICE, model card and CycloneDX AI-BOM.

numpy and gguf-py only: no torch is needed to export (reading a PEFT folder needs safetensors, from the tune extra).
"""

from kaiyuan.export._adapter import base_shape_of, convert_peft_adapter
from kaiyuan.export._atomic import atomic_output
from kaiyuan.export._export import ExportResult, export_model
from kaiyuan.export._lora_gguf import (
    PERMUTED_QK_ARCHITECTURES,
    SUPPORTED_ARCHITECTURES,
    BaseShape,
    PeftAdapter,
    gguf_lora_tensors,
    permute_qk_rows,
    read_peft_adapter,
    write_lora_gguf,
)
from kaiyuan.export._lora_peft import gguf_lora_to_peft
from kaiyuan.export._merge import AdapterWeights, add_metadata, merge_adapter, read_gguf_adapter
from kaiyuan.export._quantize import QUANT_CHOICES, file_type_name, quantize

__all__ = [
    "PERMUTED_QK_ARCHITECTURES",
    "QUANT_CHOICES",
    "SUPPORTED_ARCHITECTURES",
    "AdapterWeights",
    "BaseShape",
    "ExportResult",
    "PeftAdapter",
    "add_metadata",
    "atomic_output",
    "base_shape_of",
    "convert_peft_adapter",
    "export_model",
    "file_type_name",
    "gguf_lora_tensors",
    "gguf_lora_to_peft",
    "merge_adapter",
    "permute_qk_rows",
    "quantize",
    "read_gguf_adapter",
    "read_peft_adapter",
    "write_lora_gguf",
]
