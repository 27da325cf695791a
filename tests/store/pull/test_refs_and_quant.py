"""Pull references (every accepted form, default names, clear refusals) and choosing a GGUF by quantization."""

from __future__ import annotations

import pytest

import kaiyuan.store.pull as pull_package
from kaiyuan.errors import InvalidRequest, ModelNotFound
from kaiyuan.store import parse_name
from kaiyuan.store.pull import RemoteFile, choose_gguf, parse_ref, quant_label


@pytest.mark.parametrize(
    ("text", "hub", "repo", "selector", "revision", "registry", "name"),
    [
        (
            "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
            "hf",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "Q4_K_M",
            None,
            None,
            "qwen2.5-0.5b-instruct:q4_k_m",
        ),
        (
            "hf://org/repo:sub/file-Q8_0.gguf@v1.0",
            "hf",
            "org/repo",
            "sub/file-Q8_0.gguf",
            "v1.0",
            None,
            "repo:q8_0",
        ),
        ("hf://org/Repo_GGUF@refs/pr/1", "hf", "org/Repo_GGUF", None, "refs/pr/1", None, "repo:latest"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf",
            "bartowski/Llama-3.2-1B-Instruct-GGUF",
            "Q4_K_M",
            None,
            None,
            "hf.co/bartowski/llama-3.2-1b-instruct-gguf:q4_k_m",
        ),
        ("huggingface.co/org/repo", "hf", "org/repo", None, None, None, "hf.co/org/repo:latest"),
        (
            "ms://Qwen/Qwen3-0.6B-GGUF:Q8_0",
            "ms",
            "Qwen/Qwen3-0.6B-GGUF",
            "Q8_0",
            None,
            None,
            "qwen3-0.6b:q8_0",
        ),
        (
            "modelscope.cn/Qwen/Qwen3-0.6B-GGUF",
            "ms",
            "Qwen/Qwen3-0.6B-GGUF",
            None,
            None,
            None,
            "modelscope.cn/qwen/qwen3-0.6b-gguf:latest",
        ),
        ("ollama://library/llama3.2:1b", "ollama", "library/llama3.2", "1b", None, None, "llama3.2:1b"),
        (
            "ollama://registry.example.com:5000/team/model:v2",
            "ollama",
            "team/model",
            "v2",
            None,
            "registry.example.com:5000",
            "team/model:v2",
        ),
        (
            "ollama://127.0.0.1:8000/library/tiny",
            "ollama",
            "library/tiny",
            None,
            None,
            "127.0.0.1:8000",
            "tiny:latest",
        ),
        ("llama3.2", "ollama", "library/llama3.2", None, None, None, "llama3.2:latest"),
        ("Someone/Model:Tag", "ollama", "someone/model", "Tag", None, None, "someone/model:tag"),
    ],
)
def test_references(
    text: str,
    hub: str,
    repo: str,
    selector: str | None,
    revision: str | None,
    registry: str | None,
    name: str,
) -> None:
    ref = parse_ref(text)
    assert (ref.hub, ref.repo, ref.selector, ref.revision, ref.registry) == (
        hub,
        repo,
        selector,
        revision,
        registry,
    )
    assert ref.default_name(quant_label(selector) if selector else None) == name
    assert str(parse_name(name)) == name  # every default name is a valid store name


def test_default_name_takes_the_chosen_quantization() -> None:
    assert parse_ref("hf://org/Tiny-GGUF").default_name("q5_k_m") == "tiny:q5_k_m"
    assert parse_ref("hf.co/org/Tiny-GGUF").default_name("q5_k_m") == "hf.co/org/tiny-gguf:latest"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hf://",
        "hf://repo-only",
        "hf://a/b/c",
        "hf://org/repo:",
        "hf://org/repo@",
        "s3://x/y",
        "ollama://a/b/c/d",
        "ollama://x:",
        "hf://org/repo:not a quant",
    ],
)
def test_bad_references(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"cannot pull .*use hf://ORG/REPO"):
        parse_ref(text)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct-Q8_0.gguf", "Q8_0"),
        ("Q4_K_M/Model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("gemma-3-27b-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Meta-Llama-3.1-8B-Instruct-IQ3_XXS.gguf", "IQ3_XXS"),
        ("model.BF16.gguf", "BF16"),
        ("model_f16.gguf", "F16"),
        ("Qwen2.5-7B.gguf", None),
    ],
)
def test_quant_labels(path: str, label: str | None) -> None:
    assert quant_label(path) == label


FILES = [
    RemoteFile("README.md"),
    RemoteFile("model-Q4_K_M.gguf", 10),
    RemoteFile("model-Q4_K_S.gguf", 9),
    RemoteFile("model-Q8_0.gguf", 20),
    RemoteFile("mmproj-model-f16.gguf", 5),
    RemoteFile("big/model-F16-00001-of-00002.gguf", 50),
    RemoteFile("big/model-F16-00002-of-00002.gguf", 50),
]


def test_choose_by_quantization_file_and_default() -> None:
    assert choose_gguf(FILES, "q8_0", "repo").path == "model-Q8_0.gguf"
    assert choose_gguf(FILES, None, "repo").path == "model-Q4_K_M.gguf"  # Ollama's default
    assert choose_gguf(FILES, "model-Q4_K_S.gguf", "repo").size == 9
    assert choose_gguf([RemoteFile("only.gguf")], None, "repo").path == "only.gguf"


def test_choice_errors_say_what_exists() -> None:
    with pytest.raises(ModelNotFound, match=r"available quantizations: F16, Q4_K_M, Q4_K_S, Q8_0"):
        choose_gguf(FILES, "Q2_K", "repo")
    with pytest.raises(InvalidRequest, match=r"F16 is split into 2 files.*llama-gguf-split --merge"):
        choose_gguf(FILES, "F16", "repo")
    with pytest.raises(InvalidRequest, match=r"Q4_K matches several files"):
        choose_gguf(FILES, "Q4_K", "repo")
    with pytest.raises(ModelNotFound, match="has no GGUF model file"):
        choose_gguf([RemoteFile("README.md"), RemoteFile("mmproj-f16.gguf")], None, "repo")
    with pytest.raises(ModelNotFound, match=r"has no file 'nope\.gguf'"):
        choose_gguf(FILES, "nope.gguf", "repo")
    with pytest.raises(
        InvalidRequest, match=r"no Q4_K_M; choose a quantization with :QUANT \(available: Q5_0, Q8_0\)"
    ):
        choose_gguf([RemoteFile("a-Q8_0.gguf"), RemoteFile("a-Q5_0.gguf")], None, "repo")


def test_public_names_are_sorted() -> None:
    names = pull_package.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(pull_package, n) for n in names)
