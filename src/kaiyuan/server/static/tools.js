// kaiyuan web chat: MCP tools.
//
// Owns: the tools menu (one switch per MCP server the server's owner configured in kaiyuan.toml, read by name
// from GET kaiyuan/mcp/servers, and "call a tool first"), the Responses request that offers the switched-on
// servers (POST v1/responses with `mcp` tools naming them by label, streamed, not stored: the page never names a
// command or a URL, so it can reach nothing the owner did not configure), turning that stream into the steps the
// page shows (reasoning, answer text, a finished tool call), and the folded section that shows each call with its
// result. Tool output is untrusted text: it reaches the page through textContent only. Must not know: the rest
// of the page, or storage keys.

import { listMcpServers, streamResponse } from "./api.js";

/** The configured servers' names; [] when there are none or the list cannot be read (the menu stays hidden). */
export async function loadToolServers(apiKey) {
  try {
    return await listMcpServers({ apiKey });
  } catch {
    return [];
  }
}

/**
 * Wire the tools menu. `elements`: {button, panel, list, first}; `settings()` gives the current settings and
 * `save(patch)` stores a change. Returns {show(servers), active()}: active() are the switched-on servers the
 * server still has.
 */
export function toolsMenu(elements, settings, save) {
  const { button, panel, list, first } = elements;
  let servers = [];

  const active = () => settings().mcpServers.filter((name) => servers.includes(name));

  const label = () => {
    const on = active().length;
    button.textContent = on ? `Tools · ${on} on` : "Tools";
  };

  const close = () => {
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
  };

  button.addEventListener("click", () => {
    const opening = panel.hidden;
    panel.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    if (opening) (list.querySelector("input") || first).focus();
  });
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Esc closes the menu, it does not stop a reply
      close();
      button.focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (!panel.hidden && !panel.contains(event.target) && !button.contains(event.target)) close();
  });
  first.addEventListener("change", () => save({ toolFirst: first.checked }));

  function show(names) {
    servers = names;
    button.hidden = !servers.length;
    if (!servers.length) close();
    list.replaceChildren();
    for (const name of servers) {
      const row = document.createElement("label");
      row.className = "tools-server";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.setAttribute("role", "switch");
      box.checked = settings().mcpServers.includes(name);
      box.addEventListener("change", () => {
        const others = settings().mcpServers.filter((n) => n !== name);
        save({ mcpServers: box.checked ? [...others, name] : others });
        label();
      });
      const text = document.createElement("span");
      text.textContent = name;
      row.append(box, text);
      list.appendChild(row);
    }
    first.checked = settings().toolFirst;
    label();
  }

  return { show, active };
}

/**
 * The POST v1/responses body for `messages` (the conversation) with the tools of `servers`. Earlier answers go
 * back with their tool calls (as `mcp_call` items) so the model sees what it called; failed answers not at all.
 */
export function toolsRequest({ model, messages, settings, servers }) {
  const input = [];
  for (const m of messages) {
    if (m.role === "user") input.push({ role: "user", content: m.content });
    else if (m.role === "assistant" && m.content) {
      for (const call of m.tools || []) {
        if (!call.id) continue;
        const item = { type: "mcp_call", id: call.id, server_label: call.server, name: call.name };
        item.arguments = call.arguments || "{}";
        if (call.error) item.error = call.error;
        else item.output = call.output || "";
        input.push(item);
      }
      input.push({ role: "assistant", content: m.content });
    }
  }
  const body = {
    model,
    input,
    tools: servers.map((name) => ({ type: "mcp", server_label: name, require_approval: "never" })),
    store: false, // the conversation lives in this browser, as on the chat path
    temperature: settings.temperature,
    max_output_tokens: settings.maxTokens,
  };
  const system = settings.systemPrompt.trim();
  if (system) body.instructions = system;
  if (settings.toolFirst) body.tool_choice = "required"; // the first turn calls a tool; later turns may answer
  if (settings.thinking === "off") body.reasoning = { effort: "none" };
  return body;
}

function toolCall(item) {
  const text = (value) => (typeof value === "string" ? value : "");
  return {
    id: text(item.id),
    server: text(item.server_label),
    name: text(item.name),
    arguments: text(item.arguments),
    output: text(item.output),
    error: text(item.error),
  };
}

/**
 * The Responses stream as the page's steps: {reasoning}, {content}, {tool}, {truncated}, {reasoningTokens}.
 * The server runs the tool loop and sends the calls and the answer when it is done.
 */
export async function* toolSteps(body, options) {
  for await (const event of streamResponse(body, options)) {
    if (event.type === "response.reasoning_text.delta" && typeof event.delta === "string") {
      yield { reasoning: event.delta };
    } else if (event.type === "response.output_text.delta" && typeof event.delta === "string") {
      yield { content: event.delta };
    } else if (event.type === "response.output_item.done" && event.item && event.item.type === "mcp_call") {
      yield { tool: toolCall(event.item) };
    } else if (event.type === "response.completed" || event.type === "response.incomplete") {
      const response = event.response || {};
      if (response.incomplete_details && response.incomplete_details.reason === "max_output_tokens")
        yield { truncated: true };
      const details = response.usage && response.usage.output_tokens_details;
      if (details && Number.isFinite(details.reasoning_tokens) && details.reasoning_tokens > 0)
        yield { reasoningTokens: details.reasoning_tokens };
    }
  }
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

function part(labelText, text, className) {
  const label = document.createElement("div");
  label.className = "tool-call-label";
  label.textContent = labelText;
  const pre = document.createElement("pre");
  pre.className = className;
  pre.textContent = text;
  return [label, pre];
}

/** The folded sections of a message's tool calls, one per call: its name, then its arguments and result. */
export function buildToolCalls(calls) {
  const box = document.createElement("div");
  box.className = "tool-calls";
  for (const call of calls) {
    const details = document.createElement("details");
    details.className = call.error ? "tool-call tool-call-failed" : "tool-call";
    const summary = document.createElement("summary");
    summary.textContent = `${call.error ? "Tool call failed" : "Tool call"} · ${call.server}.${call.name}`;
    const body = document.createElement("div");
    body.className = "tool-call-body";
    body.append(...part("Arguments", pretty(call.arguments || "{}"), "tool-call-args"));
    body.append(
      ...(call.error
        ? part("Error", call.error, "tool-call-result")
        : part("Result", call.output, "tool-call-result")),
    );
    details.append(summary, body);
    box.appendChild(details);
  }
  return box;
}
