// kaiyuan web chat: the page.
//
// Owns: wiring the page together — the model picker with license and openness badges, the conversation list
// (open, rename, delete, export), the thread (user messages as plain text, assistant answers as Markdown from
// markdown.js, reasoning in a folded "Thinking" section, MCP tool calls folded the same way by tools.js), the
// composer (Enter sends, Shift+Enter new line, Esc stops), streaming with Stop (AbortController) and
// Regenerate, and the settings dialog (system prompt, temperature, max tokens, thinking on/off, API key). With
// MCP tools switched on (tools.js) an answer comes from the Responses API's tool loop, otherwise from Chat
// Completions. Model output only ever reaches the page through renderMarkdown or textContent. Must not know:
// HTTP details (api.js) or storage keys (store.js).

import { ApiError, listModels, streamChat } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { buildToolCalls, loadToolServers, toolSteps, toolsMenu, toolsRequest } from "./tools.js";
import {
  exportJson,
  loadConversations,
  loadSettings,
  newConversation,
  saveConversations,
  saveSettings,
  titleFrom,
} from "./store.js";

const $ = (id) => document.getElementById(id);

const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  toggleSidebar: $("toggle-sidebar"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  exportAll: $("export-all"),
  exportConversation: $("export-conversation"),
  model: $("model"),
  badges: $("model-badges"),
  notice: $("notice"),
  noticeText: $("notice-text"),
  noticeAction: $("notice-action"),
  messages: $("messages"),
  thread: $("thread"),
  emptyState: $("empty-state"),
  composer: $("composer"),
  input: $("message"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
  settings: $("settings"),
  settingsAlert: $("settings-alert"),
  systemPrompt: $("system-prompt"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  thinking: $("thinking"),
  apiKey: $("api-key"),
  settingsCancel: $("settings-cancel"),
};

const state = {
  settings: loadSettings(),
  conversations: loadConversations(),
  currentId: null,
  models: [],
  streaming: null, // {conversation, message, controller, node}
};

// ----------------------------------------------------------------------------------------------------- helpers

function current() {
  return state.conversations.find((c) => c.id === state.currentId) || null;
}

function persist() {
  const problem = saveConversations(state.conversations);
  if (problem) showNotice(problem);
}

function announce(text) {
  ui.status.textContent = "";
  // a separate task so screen readers notice the change even when the text repeats
  setTimeout(() => {
    ui.status.textContent = text;
  }, 30);
}

function showNotice(text, action) {
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
  if (action) {
    ui.noticeAction.textContent = action.label;
    ui.noticeAction.onclick = action.run;
    ui.noticeAction.hidden = false;
  } else {
    ui.noticeAction.hidden = true;
    ui.noticeAction.onclick = null;
  }
}

function hideNotice() {
  ui.notice.hidden = true;
}

function formatSeconds(ms) {
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection-based copy
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

// Icons are drawn as inline SVG (no icon font, no emoji that a system may lack).
const ICONS = {
  pencil: "M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4",
  trash: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13M10 11v6M14 11v6",
  menu: "M4 7h16M4 12h16M4 17h16",
};

function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "18");
  svg.setAttribute("height", "18");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.appendChild(path);
  return svg;
}

function flash(button, text) {
  const before = button.dataset.label || button.textContent;
  button.dataset.label = before;
  button.textContent = text;
  setTimeout(() => {
    button.textContent = before;
  }, 1500);
}

function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}`;
}

// ------------------------------------------------------------------------------------------------------ models

function licenseOf(model) {
  return model && model.license && typeof model.license === "object" ? model.license : null;
}

const COMMERCIAL_TEXT = {
  allowed: "commercial use allowed",
  conditional: "commercial use with conditions",
  forbidden: "no commercial use",
  unknown: "commercial use unknown",
};

function badge(text, kind, title) {
  const span = document.createElement("span");
  span.className = `badge badge-${kind}`;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

function renderBadges() {
  ui.badges.replaceChildren();
  const model = state.models.find((m) => m.id === ui.model.value);
  const lic = licenseOf(model);
  if (!lic) return;
  const commercial = ["allowed", "conditional", "forbidden"].includes(lic.commercial_use)
    ? lic.commercial_use
    : "unknown";
  const label = lic.spdx || lic.name || lic.id || "unknown license";
  const details = [lic.name && lic.name !== label ? lic.name : "", COMMERCIAL_TEXT[commercial]];
  if (lic.research_only) details.push("research only");
  if (Number.isFinite(lic.mau_limit) && lic.mau_limit > 0)
    details.push(`limit ${lic.mau_limit.toLocaleString()} monthly users`);
  const licBadge = badge(label, `license-${commercial}`, details.filter(Boolean).join(" · "));
  licBadge.setAttribute("aria-label", `License: ${label}, ${COMMERCIAL_TEXT[commercial]}`);
  ui.badges.appendChild(licBadge);
  const openness = lic.openness && typeof lic.openness === "object" ? lic.openness : null;
  const mof = openness ? openness.mof_class : lic.mof_class;
  if (openness || mof !== undefined) {
    const text = mof ? `MOF ${/^class/i.test(mof) ? mof : `Class ${mof}`}` : "MOF: not graded";
    const osaid = openness && openness.osaid ? `OSI open-source AI definition: ${openness.osaid}` : "";
    const grade = badge(
      text,
      mof ? "openness" : "openness-none",
      ["Model Openness Framework grade", osaid].filter(Boolean).join(" · "),
    );
    grade.setAttribute("aria-label", `Openness: ${text}${osaid ? `, ${osaid}` : ""}`);
    ui.badges.appendChild(grade);
  }
  const measured = evalBadge(model);
  if (measured) ui.badges.appendChild(measured);
}

// What kaiyuan eval / export / convert measured on the model (records as on its manifest, docs/eval.md): one
// badge with the most telling figure (the cost against a source, else held-out chats, else perplexity); every
// record in its tooltip.
function describeEval(r) {
  const num = (v, d) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "?");
  const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(1)}%` : "?");
  const where = r.corpus && r.corpus.name ? ` on ${r.corpus.name}` : "";
  if (r.kind === "chat") {
    const base = r.against ? `; ${r.against.name}: ${r.against.matched}/${r.against.examples}` : "";
    return `chat${where}: answers matched ${r.matched}/${r.examples}, loss ${num(r.loss, 4)}${base}`;
  }
  if (r.kind === "against" || r.kind === "export") {
    const kl = r.kl ? r.kl.mean : undefined;
    const subject = r.kind === "export" ? `export ${(r.output && r.output.quantization) || "?"}` : "cost";
    const against = r.kind === "export" ? "this model" : (r.against && r.against.name) || "?";
    return (
      `${subject} vs ${against}: mean KL ${num(kl, 4)}, top-1 ${pct(r.top1_agreement)}, ` +
      `PPL ratio ${num(r.ppl_ratio, 4)}${where}${r.quick ? " (quick)" : ""}`
    );
  }
  return `perplexity ${num(r.ppl, 2)}${where} at ctx ${r.n_ctx}`;
}

function evalBadge(model) {
  const records = model && Array.isArray(model.evals) ? model.evals.filter((r) => r && r.kind) : [];
  if (!records.length) return null;
  const pick = (kind) => records.filter((r) => r.kind === kind).pop();
  const cost = pick("against");
  const chat = pick("chat");
  let text;
  if (cost && cost.kl) text = `KL ${cost.kl.mean.toFixed(4)} vs ${cost.against ? cost.against.name : "source"}`;
  else if (chat) text = `chat ${chat.matched}/${chat.examples} matched`;
  else if (pick("perplexity")) text = `PPL ${pick("perplexity").ppl.toFixed(2)}`;
  else text = `${records.length} measurement${records.length === 1 ? "" : "s"}`;
  const span = badge(text, "eval", ["Measured by kaiyuan eval:", ...records.map(describeEval)].join("\n"));
  span.setAttribute("aria-label", `Evaluation: ${records.map(describeEval).join("; ")}`);
  return span;
}

function optionLabel(model) {
  const lic = licenseOf(model);
  const short = lic ? lic.spdx || lic.id : "";
  return short && short !== "unknown" ? `${model.id} · ${short}` : model.id;
}

function fillModelPicker() {
  const wanted = (current() && current().model) || state.settings.model;
  ui.model.replaceChildren();
  for (const model of state.models) {
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = optionLabel(model);
    ui.model.appendChild(option);
  }
  if (!state.models.length) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "No models: run `kaiyuan pull` or `kaiyuan import`";
    ui.model.appendChild(option);
  }
  ui.model.disabled = !state.models.length;
  if (wanted && state.models.some((m) => m.id === wanted)) ui.model.value = wanted;
  // otherwise a model the server holds in memory already: the first answer needs no load
  else if (state.models.some((m) => m.loaded)) ui.model.value = state.models.find((m) => m.loaded).id;
  renderBadges();
}

const tools = toolsMenu(
  { button: $("tools-button"), panel: $("tools-panel"), list: $("tools-servers"), first: $("tools-first") },
  () => state.settings,
  (patch) => {
    state.settings = { ...state.settings, ...patch };
    const problem = saveSettings(state.settings);
    if (problem) showNotice(problem);
  },
);

async function loadModels() {
  loadToolServers(state.settings.apiKey).then(tools.show);
  try {
    state.models = (await listModels({ apiKey: state.settings.apiKey })).filter(
      (m) => m && typeof m.id === "string" && !m.alias_of, // one entry per model, not one per name
    );
    hideNotice();
  } catch (exc) {
    state.models = [];
    if (exc instanceof ApiError && exc.needsKey) {
      showNotice(exc.message, { label: "Enter API key", run: () => openSettings(exc.message) });
    } else {
      showNotice(exc.message || String(exc), { label: "Retry", run: loadModels });
    }
  }
  fillModelPicker();
  updateComposer();
}

// ------------------------------------------------------------------------------------------- conversation list

function renderConversationList() {
  ui.list.replaceChildren();
  ui.listEmpty.hidden = state.conversations.length > 0;
  for (const conv of state.conversations) {
    const li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = conv.id;
    if (conv.id === state.currentId) li.classList.add("active");

    const open = document.createElement("button");
    open.type = "button";
    open.className = "conversation-open";
    open.textContent = conv.title;
    open.title = conv.title;
    if (conv.id === state.currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => {
      selectConversation(conv.id);
      closeSidebar();
    });

    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "btn-icon conversation-rename";
    rename.appendChild(icon("pencil"));
    rename.setAttribute("aria-label", `Rename ${conv.title}`);
    rename.title = "Rename";
    rename.addEventListener("click", () => startRename(li, conv));

    const del = document.createElement("button");
    del.type = "button";
    del.className = "btn-icon conversation-delete";
    del.appendChild(icon("trash"));
    del.setAttribute("aria-label", `Delete ${conv.title}`);
    del.title = "Delete";
    del.addEventListener("click", () => {
      if (del.dataset.armed === "1") {
        deleteConversation(conv.id);
        return;
      }
      del.dataset.armed = "1";
      del.textContent = "Delete?";
      del.classList.add("armed");
      del.setAttribute("aria-label", `Confirm delete ${conv.title}`);
      setTimeout(() => {
        if (del.isConnected) {
          del.dataset.armed = "";
          del.replaceChildren(icon("trash"));
          del.classList.remove("armed");
          del.setAttribute("aria-label", `Delete ${conv.title}`);
        }
      }, 4000);
    });
    li.append(open, rename, del);
    ui.list.appendChild(li);
  }
}

function startRename(li, conv) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = "conversation-title-input";
  input.value = conv.title;
  input.maxLength = 200;
  input.setAttribute("aria-label", "Conversation title");
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title) {
      conv.title = title;
      persist();
    }
    renderConversationList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function deleteConversation(id) {
  if (state.streaming && state.streaming.conversation.id === id) state.streaming.controller.abort();
  state.conversations = state.conversations.filter((c) => c.id !== id);
  persist();
  if (state.currentId === id) state.currentId = null;
  renderConversationList();
  renderThread();
  announce("Conversation deleted");
}

function selectConversation(id) {
  state.currentId = id;
  const conv = current();
  if (conv && conv.model && state.models.some((m) => m.id === conv.model)) {
    ui.model.value = conv.model;
    renderBadges();
  }
  renderConversationList();
  renderThread();
  ui.input.focus();
}

function startNewChat() {
  state.currentId = null;
  renderConversationList();
  renderThread();
  closeSidebar();
  ui.input.focus();
}

// ------------------------------------------------------------------------------------------------------ thread

function metaLine(message) {
  const meta = document.createElement("div");
  meta.className = "msg-meta";
  meta.textContent =
    message.role === "user" ? "You" : message.model ? `Assistant · ${message.model}` : "Assistant";
  return meta;
}

function thinkingSummary(message, live) {
  const parts = [live ? "Thinking…" : "Thinking"];
  if (message.reasoningTokens)
    parts.push(`${message.reasoningTokens} token${message.reasoningTokens === 1 ? "" : "s"}`);
  if (Number.isFinite(message.reasoningMs)) parts.push(formatSeconds(message.reasoningMs));
  return parts.join(" · ");
}

function buildThinking(message, live) {
  const details = document.createElement("details");
  details.className = "thinking";
  details.open = live;
  const summary = document.createElement("summary");
  summary.textContent = thinkingSummary(message, live);
  const body = document.createElement("div");
  body.className = "thinking-body";
  body.textContent = message.reasoning || "";
  details.append(summary, body);
  return details;
}

function buildMessage(message, index, isLast, live) {
  const article = document.createElement("article");
  article.className = `msg msg-${message.role}`;
  article.dataset.index = String(index);
  article.appendChild(metaLine(message));
  if (message.role === "user") {
    const body = document.createElement("div");
    body.className = "msg-body msg-text";
    body.textContent = message.content;
    article.appendChild(body);
    return article;
  }
  if (message.reasoning) article.appendChild(buildThinking(message, live));
  if (message.tools) article.appendChild(buildToolCalls(message.tools));
  if (live && message.toolServers && !message.content && !message.tools) {
    // the tool loop runs to its end before anything arrives: say what the wait is
    const wait = document.createElement("div");
    wait.className = "msg-note tools-pending";
    wait.textContent = `Working with tools (${message.toolServers.join(", ")})…`;
    article.appendChild(wait);
  }
  const body = document.createElement("div");
  body.className = "msg-body markdown";
  body.appendChild(renderMarkdown(message.content));
  if (live) body.classList.add("streaming");
  article.appendChild(body);
  const notes = [];
  if (message.stopped) notes.push("Stopped.");
  if (message.truncated) notes.push("Cut off at Max tokens.");
  if (notes.length) {
    const note = document.createElement("div");
    note.className = "msg-note";
    note.textContent = notes.join(" ");
    article.appendChild(note);
  }
  if (message.error) {
    const err = document.createElement("div");
    err.className = "msg-error";
    err.setAttribute("role", "alert");
    err.textContent = message.error;
    article.appendChild(err);
  }
  if (!live) {
    const actions = document.createElement("div");
    actions.className = "msg-actions";
    if (message.content) {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "btn btn-small btn-quiet copy-answer";
      copy.textContent = "Copy";
      copy.addEventListener("click", async () =>
        flash(copy, (await copyText(message.content)) ? "Copied" : "Copy failed"),
      );
      actions.appendChild(copy);
    }
    if (isLast) {
      const regen = document.createElement("button");
      regen.type = "button";
      regen.className = "btn btn-small btn-quiet regenerate";
      regen.textContent = "Regenerate";
      regen.disabled = Boolean(state.streaming);
      regen.addEventListener("click", regenerate);
      actions.appendChild(regen);
    }
    if (actions.childElementCount) article.appendChild(actions);
  }
  return article;
}

function renderThread() {
  const conv = current();
  const messages = conv ? conv.messages : [];
  ui.thread.replaceChildren();
  ui.emptyState.hidden = messages.length > 0;
  messages.forEach((message, index) => {
    const live = Boolean(state.streaming && state.streaming.message === message);
    const node = buildMessage(message, index, index === messages.length - 1 && message.role === "assistant", live);
    if (live) state.streaming.node = node;
    ui.thread.appendChild(node);
  });
  ui.exportConversation.disabled = !conv;
  scrollToEnd(true);
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd(force) {
  if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// One render per animation frame at most; when rendering a long answer gets slow, leave the page some time
// between renders (twice the last render's cost) so typing and scrolling stay smooth.
let frame = 0;
let renderCost = 0;
function scheduleStreamRender() {
  if (frame) return;
  const run = () => {
    frame = requestAnimationFrame(() => {
      const started = performance.now();
      renderStreaming();
      renderCost = performance.now() - started;
      frame = 0;
    });
  };
  if (renderCost > 8) {
    frame = -1;
    setTimeout(run, Math.min(renderCost * 2, 250));
  } else {
    run();
  }
}

// Update the live answer in place: the Thinking section (kept as the user left it) and the Markdown body.
function renderStreaming() {
  const s = state.streaming;
  if (!s || !s.node || !s.node.isConnected) return;
  const stick = nearBottom();
  const { message, node } = s;
  let details = node.querySelector("details.thinking");
  if (message.reasoning && !details) {
    details = buildThinking(message, true);
    node.insertBefore(details, node.querySelector(".msg-body"));
  }
  if (details) {
    details.querySelector("summary").textContent = thinkingSummary(message, !message.content);
    details.querySelector(".thinking-body").textContent = message.reasoning;
  }
  if (message.content || message.tools) node.querySelector(".tools-pending")?.remove();
  const calls = node.querySelector(".tool-calls");
  if (message.tools && (!calls || calls.childElementCount !== message.tools.length)) {
    const fresh = buildToolCalls(message.tools);
    if (calls) calls.replaceWith(fresh);
    else node.insertBefore(fresh, node.querySelector(".msg-body"));
  }
  const body = node.querySelector(".msg-body");
  body.replaceChildren(renderMarkdown(message.content));
  if (stick) scrollToEnd(true);
}

// ----------------------------------------------------------------------------------------------------- sending

function updateComposer() {
  const busy = Boolean(state.streaming);
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = busy || !state.models.length;
  for (const button of ui.thread.querySelectorAll("button.regenerate")) button.disabled = busy;
}

function requestMessages(conv) {
  const out = [];
  const system = state.settings.systemPrompt.trim();
  if (system) out.push({ role: "system", content: system });
  for (const m of conv.messages) {
    if (m.role === "user") out.push({ role: "user", content: m.content });
    // earlier answers go back without their reasoning (what R1-style models expect); failed ones not at all
    else if (m.role === "assistant" && m.content) out.push({ role: "assistant", content: m.content });
  }
  return out;
}

// Chat Completions chunks as the page's steps (the shape tools.js gives for the Responses stream).
async function* chatSteps(payload, options) {
  for await (const chunk of streamChat(payload, options)) {
    const choice = chunk && Array.isArray(chunk.choices) ? chunk.choices[0] : null;
    const delta = choice && choice.delta ? choice.delta : {};
    const thought =
      typeof delta.reasoning_content === "string"
        ? delta.reasoning_content
        : typeof delta.reasoning === "string"
          ? delta.reasoning
          : "";
    if (thought) yield { reasoning: thought };
    if (typeof delta.content === "string" && delta.content) yield { content: delta.content };
    if (choice && choice.finish_reason === "length") yield { truncated: true };
    const details = chunk && chunk.usage && chunk.usage.completion_tokens_details;
    if (details && Number.isFinite(details.reasoning_tokens) && details.reasoning_tokens > 0)
      yield { reasoningTokens: details.reasoning_tokens };
  }
}

async function generate(conv) {
  const model = ui.model.value;
  if (!model) {
    showNotice("No model to answer: start the server with a model in its store (`kaiyuan list`).");
    return;
  }
  conv.model = model;
  const message = { role: "assistant", content: "", reasoning: "", model };
  const servers = tools.active();
  let steps;
  const options = { apiKey: state.settings.apiKey, signal: null };
  if (servers.length) {
    const body = toolsRequest({ model, messages: conv.messages, settings: state.settings, servers });
    steps = () => toolSteps(body, options);
    message.toolServers = servers; // shown while the loop runs, not kept
  } else {
    const payload = {
      model,
      messages: requestMessages(conv),
      temperature: state.settings.temperature,
      max_tokens: state.settings.maxTokens,
    };
    if (state.settings.thinking)
      payload.chat_template_kwargs = { enable_thinking: state.settings.thinking === "on" };
    steps = () => chatSteps(payload, options);
  }
  conv.messages.push(message);
  conv.updated = Date.now();
  const controller = new AbortController();
  options.signal = controller.signal;
  state.streaming = { conversation: conv, message, controller, node: null };
  persist();
  renderConversationList();
  renderThread();
  updateComposer();

  let reasoningStart = 0;
  let reasoningDeltas = 0;
  let usageReasoning = null;
  try {
    for await (const step of steps()) {
      const thought = step.reasoning || "";
      if (thought) {
        if (!reasoningStart) reasoningStart = performance.now();
        message.reasoning += thought;
        reasoningDeltas += 1;
        message.reasoningTokens = usageReasoning ?? reasoningDeltas;
        message.reasoningMs = performance.now() - reasoningStart;
      }
      if (step.content) {
        if (reasoningStart && !message.content) message.reasoningMs = performance.now() - reasoningStart;
        message.content += step.content;
      }
      if (step.tool) message.tools = [...(message.tools || []), step.tool];
      if (step.truncated) message.truncated = true;
      if (step.reasoningTokens) {
        usageReasoning = step.reasoningTokens;
        message.reasoningTokens = usageReasoning;
      }
      scheduleStreamRender();
    }
  } catch (exc) {
    if (exc && exc.name === "AbortError") {
      message.stopped = true;
    } else if (exc instanceof ApiError) {
      message.error = exc.message;
      if (exc.needsKey) showNotice(exc.message, { label: "Enter API key", run: () => openSettings(exc.message) });
    } else {
      message.error = `Something went wrong while reading the reply: ${exc && exc.message ? exc.message : exc}`;
    }
  } finally {
    if (!message.reasoning) {
      delete message.reasoning;
      delete message.reasoningTokens;
      delete message.reasoningMs;
    }
    if (!message.truncated) delete message.truncated;
    delete message.toolServers;
    state.streaming = null;
    conv.updated = Date.now();
    persist();
    if (state.currentId === conv.id) renderThread();
    renderConversationList();
    updateComposer();
    announce(message.error ? "The reply failed" : message.stopped ? "Reply stopped" : "Reply finished");
  }
}

function send() {
  const text = ui.input.value;
  if (!text.trim() || state.streaming || !ui.model.value) return;
  let conv = current();
  if (!conv) {
    conv = newConversation(ui.model.value);
    state.conversations.unshift(conv);
    state.currentId = conv.id;
  }
  if (!conv.messages.some((m) => m.role === "user")) conv.title = titleFrom(text);
  conv.messages.push({ role: "user", content: text });
  ui.input.value = "";
  autosize();
  // most recent first
  state.conversations = [conv, ...state.conversations.filter((c) => c !== conv)];
  generate(conv);
}

function regenerate() {
  const conv = current();
  if (!conv || state.streaming) return;
  const last = conv.messages[conv.messages.length - 1];
  if (last && last.role === "assistant") conv.messages.pop();
  if (!conv.messages.length || conv.messages[conv.messages.length - 1].role !== "user") return;
  generate(conv);
}

function stop() {
  if (state.streaming) state.streaming.controller.abort();
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

// ---------------------------------------------------------------------------------------------------- settings

function openSettings(alertText) {
  ui.systemPrompt.value = state.settings.systemPrompt;
  ui.temperature.value = String(state.settings.temperature);
  ui.maxTokens.value = String(state.settings.maxTokens);
  ui.thinking.value = state.settings.thinking;
  ui.apiKey.value = state.settings.apiKey;
  ui.settingsAlert.hidden = !alertText;
  ui.settingsAlert.textContent = alertText || "";
  ui.settings.showModal();
  (alertText ? ui.apiKey : ui.systemPrompt).focus();
}

function saveSettingsFromDialog() {
  const temperature = Number.parseFloat(ui.temperature.value);
  const maxTokens = Number.parseInt(ui.maxTokens.value, 10);
  const keyChanged = ui.apiKey.value.trim() !== state.settings.apiKey;
  state.settings = {
    ...state.settings,
    systemPrompt: ui.systemPrompt.value,
    temperature: Number.isFinite(temperature) ? Math.min(Math.max(temperature, 0), 2) : state.settings.temperature,
    maxTokens: Number.isInteger(maxTokens) && maxTokens > 0 ? maxTokens : state.settings.maxTokens,
    thinking: ui.thinking.value,
    apiKey: ui.apiKey.value.trim(),
  };
  const problem = saveSettings(state.settings);
  if (problem) showNotice(problem);
  if (keyChanged || !state.models.length) loadModels();
}

// -------------------------------------------------------------------------------------------- sidebar (phones)

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.scrim.hidden = false;
  ui.toggleSidebar.setAttribute("aria-expanded", "true");
  ui.toggleSidebar.setAttribute("aria-label", "Hide conversations");
  // the drawer slides in (visibility changes at the end of the transition): focus it once it can take focus
  setTimeout(() => (ui.list.querySelector('[aria-current="true"]') || ui.newChat).focus(), 200);
}

function closeSidebar() {
  ui.app.classList.remove("sidebar-open");
  ui.scrim.hidden = true;
  ui.toggleSidebar.setAttribute("aria-expanded", "false");
  ui.toggleSidebar.setAttribute("aria-label", "Show conversations");
}

// ------------------------------------------------------------------------------------------------------ events

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

ui.input.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter (and Enter while an input method is composing, e.g. pinyin) adds a line
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    send();
  }
});
ui.input.addEventListener("input", autosize);

ui.stop.addEventListener("click", stop);
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || ui.settings.open) return;
  if (ui.app.classList.contains("sidebar-open")) {
    event.preventDefault();
    closeSidebar();
    ui.toggleSidebar.focus();
  } else if (state.streaming) {
    event.preventDefault();
    stop();
  }
});

ui.model.addEventListener("change", () => {
  state.settings.model = ui.model.value;
  saveSettings(state.settings);
  const conv = current();
  if (conv) {
    conv.model = ui.model.value; // the conversation stays; the next answer comes from the new model
    persist();
  }
  renderBadges();
  announce(`Model: ${ui.model.value}`);
});

ui.newChat.addEventListener("click", startNewChat);
ui.toggleSidebar.addEventListener("click", () =>
  ui.app.classList.contains("sidebar-open") ? closeSidebar() : openSidebar(),
);
ui.scrim.addEventListener("click", closeSidebar);

ui.exportAll.addEventListener("click", () =>
  download(`kaiyuan-chats-${stamp()}.json`, exportJson(state.conversations)),
);
ui.exportConversation.addEventListener("click", () => {
  const conv = current();
  if (conv) download(`kaiyuan-chat-${stamp()}.json`, exportJson([conv]));
});

$("open-settings").addEventListener("click", () => openSettings());
ui.settingsCancel.addEventListener("click", () => ui.settings.close("cancel"));
ui.settings.addEventListener("close", () => {
  if (ui.settings.returnValue === "save") saveSettingsFromDialog();
  ui.settings.returnValue = "";
});

// Copy buttons of code blocks (rendered by markdown.js) work by delegation.
ui.thread.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.copy-code") : null;
  if (!button) return;
  const code = button.closest(".code-block")?.querySelector("code");
  if (code) flash(button, (await copyText(code.textContent)) ? "Copied" : "Copy failed");
});

// Another tab changed the conversations: show them, unless this tab is streaming (its save will win).
window.addEventListener("storage", (event) => {
  if (event.key && event.key.startsWith("kaiyuan.chat.") && !state.streaming) {
    state.conversations = loadConversations();
    state.settings = loadSettings();
    if (!current()) state.currentId = null;
    renderConversationList();
    renderThread();
  }
});

// ------------------------------------------------------------------------------------------------------- start

ui.toggleSidebar.replaceChildren(icon("menu"));

state.currentId = state.conversations.length ? state.conversations[0].id : null;
renderConversationList();
renderThread();
updateComposer();
loadModels().then(() => ui.input.focus());
