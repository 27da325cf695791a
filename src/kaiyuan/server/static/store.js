// kaiyuan web chat: conversations and settings kept in the browser's localStorage.
//
// Owns: the stored shapes and their keys. A conversation is
//   {id, title, model, created, updated, messages: [{role, content, reasoning?, reasoningTokens?, reasoningMs?,
//    model?, error?, stopped?, truncated?, tools?: [{id, server, name, arguments, output, error}]}]}
// and settings are {systemPrompt, temperature, maxTokens, thinking, apiKey, model, mcpServers, toolFirst}.
// Reading tolerates damaged or foreign data (it is dropped, never thrown); writing reports a full storage
// instead of failing silently. Must not know the DOM or the server.

const CONVERSATIONS_KEY = "kaiyuan.chat.conversations.v1";
const SETTINGS_KEY = "kaiyuan.chat.settings.v1";

export const DEFAULT_SETTINGS = Object.freeze({
  systemPrompt: "",
  temperature: 0.7,
  maxTokens: 1024,
  thinking: "", // "" model default, "on", "off": sent as chat_template_kwargs.enable_thinking
  apiKey: "",
  model: "",
  mcpServers: [], // names of the MCP servers whose tools are switched on (tools.js)
  toolFirst: false, // with tools on: the first turn must call a tool (tool_choice "required")
});

const TOOL_FIELDS = ["id", "server", "name", "arguments", "output", "error"];

function cleanToolCall(call) {
  if (!call || typeof call !== "object") return null;
  const out = {};
  for (const key of TOOL_FIELDS) out[key] = typeof call[key] === "string" ? call[key] : "";
  return out.name ? out : null;
}

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

/** Write a value; returns an error message when the browser refused (storage full or disabled). */
function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return null;
  } catch (exc) {
    const why = exc && exc.name ? exc.name : exc;
    return `Could not save in this browser (${why}); export your conversations and delete old ones.`;
  }
}

function cleanMessage(m) {
  if (!m || typeof m !== "object" || !["system", "user", "assistant"].includes(m.role)) return null;
  const out = { role: m.role, content: typeof m.content === "string" ? m.content : "" };
  for (const key of ["reasoning", "model", "error"]) if (typeof m[key] === "string" && m[key]) out[key] = m[key];
  for (const key of ["reasoningTokens", "reasoningMs"]) if (Number.isFinite(m[key])) out[key] = m[key];
  if (m.stopped === true) out.stopped = true;
  if (m.truncated === true) out.truncated = true;
  if (Array.isArray(m.tools)) {
    const tools = m.tools.map(cleanToolCall).filter(Boolean);
    if (tools.length) out.tools = tools;
  }
  return out;
}

function cleanConversation(c) {
  if (!c || typeof c !== "object" || typeof c.id !== "string" || !Array.isArray(c.messages)) return null;
  return {
    id: c.id,
    title: typeof c.title === "string" && c.title.trim() ? c.title : "New chat",
    model: typeof c.model === "string" ? c.model : "",
    created: Number.isFinite(c.created) ? c.created : Date.now(),
    updated: Number.isFinite(c.updated) ? c.updated : Date.now(),
    messages: c.messages.map(cleanMessage).filter(Boolean),
  };
}

/** All stored conversations, most recently updated first. */
export function loadConversations() {
  const raw = read(CONVERSATIONS_KEY, []);
  const list = Array.isArray(raw) ? raw.map(cleanConversation).filter(Boolean) : [];
  return list.sort((a, b) => b.updated - a.updated);
}

export function saveConversations(list) {
  return write(CONVERSATIONS_KEY, list);
}

export function newConversation(model) {
  const id =
    typeof crypto !== "undefined" && crypto.randomUUID
      ? crypto.randomUUID()
      : `c${Date.now()}${Math.random().toString(16).slice(2)}`;
  const now = Date.now();
  return { id, title: "New chat", model: model || "", created: now, updated: now, messages: [] };
}

/** A short title from the first user message. */
export function titleFrom(text) {
  const line = String(text || "")
    .replace(/\s+/g, " ")
    .trim();
  if (!line) return "New chat";
  return line.length > 48 ? `${line.slice(0, 47)}…` : line;
}

export function loadSettings() {
  const raw = read(SETTINGS_KEY, {});
  const s = { ...DEFAULT_SETTINGS };
  if (raw && typeof raw === "object") {
    if (typeof raw.systemPrompt === "string") s.systemPrompt = raw.systemPrompt;
    if (Number.isFinite(raw.temperature)) s.temperature = raw.temperature;
    if (Number.isInteger(raw.maxTokens) && raw.maxTokens > 0) s.maxTokens = raw.maxTokens;
    if (["", "on", "off"].includes(raw.thinking)) s.thinking = raw.thinking;
    if (typeof raw.apiKey === "string") s.apiKey = raw.apiKey;
    if (typeof raw.model === "string") s.model = raw.model;
    if (Array.isArray(raw.mcpServers)) s.mcpServers = raw.mcpServers.filter((n) => typeof n === "string");
    if (typeof raw.toolFirst === "boolean") s.toolFirst = raw.toolFirst;
  }
  return s;
}

export function saveSettings(settings) {
  return write(SETTINGS_KEY, settings);
}

/** The JSON text of an export: {format, exported, conversations}. */
export function exportJson(conversations) {
  return JSON.stringify(
    { format: "kaiyuan-chat-export", version: 1, exported: new Date().toISOString(), conversations },
    null,
    2,
  );
}
