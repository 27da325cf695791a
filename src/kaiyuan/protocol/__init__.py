"""Wire models of the HTTP APIs (pydantic) and the one translation layer to kaiyuan's native types.

``openai`` holds the OpenAI request/response models, ``convert_openai`` translates them to and from
``kaiyuan.types``; ``ollama`` and ``convert_ollama`` do the same for the Ollama API, ``anthropic`` and
``convert_anthropic`` for Anthropic's Messages API, ``responses`` and ``convert_responses`` for OpenAI's Responses
API. ``convert_shared`` holds what every skin's converter reads (the native result shape, ids, logprob entries,
the model's default options). Imports only the leaf layer and pydantic: no engine, no chat layer, no HTTP
framework.
"""

from kaiyuan.protocol import (
    anthropic,
    convert_anthropic,
    convert_ollama,
    convert_openai,
    convert_responses,
    convert_shared,
    ollama,
    openai,
    responses,
)

__all__ = [
    "anthropic",
    "convert_anthropic",
    "convert_ollama",
    "convert_openai",
    "convert_responses",
    "convert_shared",
    "ollama",
    "openai",
    "responses",
]
