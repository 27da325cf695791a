"""A page object for the web chat: what a user does (type, send, stop, pick a model, open settings) in one place.

Owns the selectors, by accessible role and name where the page gives one. Must not know the server.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Locator, Page, expect

__all__ = ["ChatPage"]

# One llama.cpp thread on a shared machine: be patient; a stuck reply still fails the test.
REPLY_TIMEOUT_MS = 180_000


class ChatPage:
    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    # -- locators ----------------------------------------------------------------------------------------------

    @property
    def model(self) -> Locator:
        return self.page.get_by_role("combobox", name="Model")

    @property
    def message(self) -> Locator:
        return self.page.get_by_role("textbox", name="Message")

    @property
    def send_button(self) -> Locator:
        return self.page.get_by_role("button", name="Send", exact=True)

    @property
    def stop_button(self) -> Locator:
        return self.page.get_by_role("button", name="Stop", exact=True)

    @property
    def answers(self) -> Locator:
        return self.page.locator("article.msg-assistant")

    @property
    def questions(self) -> Locator:
        return self.page.locator("article.msg-user")

    @property
    def question_texts(self) -> Locator:
        return self.page.locator("article.msg-user .msg-body")

    @property
    def conversations(self) -> Locator:
        return self.page.locator("#conversation-list .conversation-open")

    # -- actions -----------------------------------------------------------------------------------------------

    def open(self, model: str | None = None) -> ChatPage:
        """Load the page, wait for the model list, and pick ``model`` when given."""
        self.page.goto(self.url)
        expect(self.model).to_be_enabled(timeout=30_000)
        if model:
            self.model.select_option(model)
        return self

    def ask(self, text: str) -> None:
        """Type ``text`` and press Enter (the page takes the text at once; the reply may still be streaming)."""
        self.message.fill(text)
        self.message.press("Enter")
        expect(self.message).to_have_value("")

    def wait_reply(self, timeout: float = REPLY_TIMEOUT_MS) -> Locator:
        """Wait until no reply is streaming; returns the last answer."""
        expect(self.stop_button).to_be_hidden(timeout=timeout)
        expect(self.send_button).to_be_visible()
        return self.answers.last

    def settings(self, **fields: str) -> None:
        """Open Settings, set fields by label (system_prompt, temperature, max_tokens, thinking, api_key), Save."""
        labels = {
            "system_prompt": "System prompt",
            "temperature": "Temperature",
            "max_tokens": "Max tokens",
            "thinking": "Thinking",
            "api_key": "API key",
        }
        self.page.get_by_role("button", name="Settings").click()
        dialog = self.page.get_by_role("dialog", name="Settings")
        expect(dialog).to_be_visible()
        for key, value in fields.items():
            field = dialog.get_by_label(labels[key], exact=True)
            if key == "thinking":
                field.select_option(label=value)
            else:
                field.fill(value)
        dialog.get_by_role("button", name="Save").click()
        expect(dialog).to_be_hidden()

    def stored(self) -> list[dict[str, Any]]:
        """The conversations as the page stored them in localStorage."""
        raw = self.page.evaluate("() => localStorage.getItem('kaiyuan.chat.conversations.v1')")
        return json.loads(raw) if raw else []

    def watch_answer(self) -> None:
        """Record every state of the streaming answer: text length and whether Thinking is open."""
        self.page.evaluate(
            """() => {
              window.__answerStates = [];
              const thread = document.getElementById('thread');
              new MutationObserver(() => {
                const body = thread.querySelector('article.msg-assistant:last-of-type .msg-body');
                if (!body) return;
                const thinking = body.parentElement.querySelector('details.thinking');
                window.__answerStates.push({
                  streaming: body.classList.contains('streaming'),
                  text: body.textContent.length,
                  thinking: thinking ? thinking.querySelector('.thinking-body').textContent.length : 0,
                  open: thinking ? thinking.open : null,
                });
              }).observe(thread, {childList: true, subtree: true, characterData: true, attributes: true});
            }"""
        )

    def answer_states(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("() => window.__answerStates"))
