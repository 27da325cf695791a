"""The model store: names (``name[:tag]``) → JSON manifests → content-addressed blobs under KAIYUAN_HOME: GGUF
files, and Hugging Face folders stored file by file (laid out again as folders under ``models/trees/``).

Imports only the leaf layer and (lazily, for the policy check) ``kaiyuan.license``. See ``docs/store.md``.
"""

from __future__ import annotations

from kaiyuan.store._blobs import hash_file, normalise_digest
from kaiyuan.store._bundled import BUNDLED_NAME, bundled_file
from kaiyuan.store._hf_folder import folder_special_tokens, read_folder_config, read_folder_template
from kaiyuan.store._manifest import SCHEMA_VERSION, BlobRef, Manifest, parameter_size_label
from kaiyuan.store._names import DEFAULT_TAG, ModelName, parse_name
from kaiyuan.store._store import ModelStore, read_chat_template

__all__ = [
    "BUNDLED_NAME",
    "DEFAULT_TAG",
    "SCHEMA_VERSION",
    "BlobRef",
    "Manifest",
    "ModelName",
    "ModelStore",
    "bundled_file",
    "folder_special_tokens",
    "hash_file",
    "normalise_digest",
    "parameter_size_label",
    "parse_name",
    "read_chat_template",
    "read_folder_config",
    "read_folder_template",
]
