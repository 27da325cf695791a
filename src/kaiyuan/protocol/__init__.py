"""Wire models of the HTTP APIs (pydantic) and the one translation layer to kaiyuan's native types.

``openai`` holds the OpenAI request/response models, ``convert`` translates them to and from ``kaiyuan.types``;
``ollama`` and ``convert_ollama`` do the same for the Ollama API, ``anthropic`` and ``convert_anthropic`` for
Anthropic's Messages API.
Imports only the leaf layer and pydantic: no engine, no chat layer, no HTTP framework.
"""

from kaiyuan.protocol import anthropic, convert, convert_anthropic, convert_ollama, ollama, openai

__all__ = ["anthropic", "convert", "convert_anthropic", "convert_ollama", "ollama", "openai"]
