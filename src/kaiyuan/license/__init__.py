"""License, openness and lineage guard: know what each model - and each model derived from it - lets you do.

Pure Python: imports only the leaf layer (errors, config) and the standard library (PyYAML lazily for model
cards, the gguf package lazily for GGUF files). Never imports torch, transformers, llama_cpp, fastapi or pydantic.

Entry points other packages call:

    enforce_policy(model, policy, action)   raise LicenseDenied when [policy] forbids import/pull/serve/tune/export
    license_summary(model)                  short license facts for /v1/models and `kaiyuan list/show`
    evaluate(model, policy=None)            full LicenseReport; .to_json() is the documented stable schema
    detect_from_path(path)                  manifest-shaped dict from a GGUF, a model card or a model folder
    quality_reasons(policy, model)          why a model's measured quantization cost fails [policy] max_kl etc.
    derivative(name, parents, relation)     the manifest of a model kaiyuan is about to create
    derive_terms(parents, relation)         effective terms of such a model (strictest wins, conflicts reported)
    write_license_file / write_notice / write_model_card / write_cyclonedx_bom   release-bundle writers

A ``model`` is a store manifest as a dict: ``name``, ``license`` ({id, name, link, source} or GGUF keys
``general.license``, ``general.license.name``, ``general.license.link``), ``lineage`` ({relation,
base_models: [{name, organization, repo_url, version, license?}], datasets}).
"""

from kaiyuan.license._bom import cyclonedx_bom, write_cyclonedx_bom
from kaiyuan.license._catalog import BaseModelEntry, Catalog, LicenseEntry, Terms, get_catalog
from kaiyuan.license._detect import (
    detect_from_path,
    model_from_card,
    model_from_gguf_metadata,
    parse_card,
    read_gguf_metadata,
)
from kaiyuan.license._effective import EffectiveTerms
from kaiyuan.license._lineage import LineageNode
from kaiyuan.license._openness import Openness
from kaiyuan.license._policy import Policy, PolicyDecision, parse_policy
from kaiyuan.license._quality import quality_reasons, record_reasons
from kaiyuan.license._record import LicenseRecord, identify
from kaiyuan.license._release import (
    card_front_matter,
    write_license_file,
    write_model_card,
    write_notice,
)
from kaiyuan.license._report import (
    LicenseReport,
    derivative,
    derive_terms,
    enforce_policy,
    evaluate,
    governing_license,
    license_summary,
)

__all__ = [
    "BaseModelEntry",
    "Catalog",
    "EffectiveTerms",
    "LicenseEntry",
    "LicenseRecord",
    "LicenseReport",
    "LineageNode",
    "Openness",
    "Policy",
    "PolicyDecision",
    "Terms",
    "card_front_matter",
    "cyclonedx_bom",
    "derivative",
    "derive_terms",
    "detect_from_path",
    "enforce_policy",
    "evaluate",
    "get_catalog",
    "governing_license",
    "identify",
    "license_summary",
    "model_from_card",
    "model_from_gguf_metadata",
    "parse_card",
    "parse_policy",
    "quality_reasons",
    "read_gguf_metadata",
    "record_reasons",
    "write_cyclonedx_bom",
    "write_license_file",
    "write_model_card",
    "write_notice",
]
