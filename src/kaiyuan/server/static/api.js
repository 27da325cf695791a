// kaiyuan web chat: talking to the server's OpenAI API.
//
// Owns: the HTTP calls the chat makes (GET v1/models, streamed POST v1/chat/completions and v1/responses, GET
// kaiyuan/mcp/servers), the Server-Sent Events
// parser over fetch's ReadableStream, the bearer key header, and turning an error response (OpenAI envelope
// {"error": {"message", "type", "param", "code"}}, HTTP status, Retry-After) into an ApiError with a sentence a
// person can act on. URLs are relative, so the chat works wherever the server mounts it and never calls another
// host. Must not know the page: no DOM here.

export class ApiError extends Error {
  /**
   * @param {string} message readable text for the chat
   * @param {{status?: number, type?: string, code?: string|null, param?: string|null,
   *          retryAfter?: number|null, detail?: string}} info
   */
  constructor(message, info = {}) {
    super(message);
    this.name = "ApiError";
    this.status = info.status ?? 0;
    this.type = info.type ?? "";
    this.code = info.code ?? null;
    this.param = info.param ?? null;
    this.retryAfter = info.retryAfter ?? null;
    this.detail = info.detail ?? "";
  }

  get needsKey() {
    return this.status === 401;
  }
}

function headers(apiKey, json) {
  const h = { Accept: json ? "application/json" : "text/event-stream" };
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

/** A readable sentence for an error envelope (its message and code) and HTTP status. */
export function describeError(status, detail, retryAfter, code = null) {
  const said = detail ? ` The server said: ${detail}` : "";
  if (status === 401) {
    return (
      "The server needs an API key. Open Settings and enter the key the server was started with " +
      "(--api-key or KAIYUAN_API_KEY)."
    );
  }
  if (status === 403) return `Not allowed.${said}`;
  if (status === 404) return `Not found.${said}`;
  if (status === 424) return `A tool server (MCP) failed; switch it off under Tools or ask the server's owner.${said}`;
  if (status === 429 || status === 503) {
    const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a moment.";
    return `The server is busy: its request queue is full.${wait}${said}`;
  }
  if (status === 400 || status === 422) {
    if (code === "context_length_exceeded" || /context (window|length)|too long/i.test(detail || "")) {
      return (
        "The conversation is too long for the model's context window. " +
        `Start a new conversation or lower Max tokens in Settings.${said}`
      );
    }
    return `The server rejected the request.${said}`;
  }
  if (status >= 500) return `The server failed to answer (HTTP ${status}).${said}`;
  return `Request failed (HTTP ${status}).${said}`;
}

async function errorFrom(response) {
  let detail = "";
  let type = "";
  let code = null;
  let param = null;
  try {
    const body = await response.json();
    const err = body && typeof body === "object" ? body.error : null;
    if (err && typeof err === "object") {
      detail = String(err.message ?? "");
      type = String(err.type ?? "");
      code = err.code ?? null;
      param = err.param ?? null;
    } else if (typeof err === "string") {
      detail = err;
    } else if (body && typeof body.detail === "string") {
      detail = body.detail;
    }
  } catch {
    detail = "";
  }
  const ra = Number.parseFloat(response.headers.get("Retry-After") || "");
  const retryAfter = Number.isFinite(ra) ? Math.ceil(ra) : null;
  return new ApiError(describeError(response.status, detail, retryAfter, code), {
    status: response.status,
    type,
    code,
    param,
    retryAfter,
    detail,
  });
}

function networkError(exc) {
  return new ApiError(
    `Cannot reach the kaiyuan server (${exc && exc.message ? exc.message : exc}). ` +
      "Is `kaiyuan serve` still running?",
    {
      status: 0,
      type: "network",
    },
  );
}

/** GET v1/models → the list of model objects (OpenAI shape plus kaiyuan's license/loaded/context_length). */
export async function listModels({ apiKey, signal } = {}) {
  let response;
  try {
    response = await fetch("v1/models", { headers: headers(apiKey, true), signal, cache: "no-store" });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw networkError(exc);
  }
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  return Array.isArray(body && body.data) ? body.data : [];
}

/** GET kaiyuan/mcp/servers → the names of the MCP servers configured in the server's kaiyuan.toml. */
export async function listMcpServers({ apiKey, signal } = {}) {
  let response;
  try {
    response = await fetch("kaiyuan/mcp/servers", { headers: headers(apiKey, true), signal, cache: "no-store" });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw networkError(exc);
  }
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  const servers = body && Array.isArray(body.servers) ? body.servers : [];
  return servers.map((s) => (s && typeof s.name === "string" ? s.name : "")).filter(Boolean);
}

/**
 * Parse a text/event-stream body into the data payloads of its events.
 * @param {ReadableStream<Uint8Array>} stream
 * @returns {AsyncGenerator<string>}
 */
export async function* readEvents(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        } // comments (":") and other fields (event, id, retry) carry nothing the chat needs
      }
      if (done) break;
    }
    if (buffer.startsWith("data:")) data.push(buffer.slice(buffer[5] === " " ? 6 : 5));
    if (data.length) yield data.join("\n");
  } finally {
    reader.releaseLock();
  }
}

// An error inside a stream has no HTTP status of its own (the 200 was sent): read it from the envelope.
function streamErrorStatus(err) {
  const byCode = {
    overloaded: 503,
    invalid_api_key: 401,
    license_denied: 403,
    model_not_found: 404,
    mcp_error: 424,
  };
  if (err && typeof err === "object") {
    if (byCode[err.code]) return byCode[err.code];
    if (err.type === "invalid_request_error") return 400;
    if (err.type === "authentication_error") return 401;
    if (err.type === "permission_error") return 403;
  }
  return 500;
}

// The ApiError for an error envelope that arrived inside a stream.
function streamFailure(err) {
  const detail = typeof err === "string" ? err : String(err.message ?? "");
  const status = streamErrorStatus(err);
  const message =
    status >= 500
      ? `The reply broke off with a server error.${detail ? ` The server said: ${detail}` : ""}`
      : describeError(status, detail, null, err.code ?? null);
  return new ApiError(message, { status, type: err.type, code: err.code, detail });
}

async function postStream(path, body, { apiKey, signal }) {
  let response;
  try {
    const init = { method: "POST", headers: headers(apiKey, true), body: JSON.stringify(body), signal };
    response = await fetch(path, init);
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw networkError(exc);
  }
  if (!response.ok) throw await errorFrom(response);
  if (!response.body) throw new ApiError("The server sent an empty reply.", { status: response.status });
  return response.body;
}

/**
 * POST v1/chat/completions with stream=true; yields each chunk object until [DONE].
 * An error event inside the stream ({"error": {...}}) is thrown as ApiError.
 */
export async function* streamChat(body, { apiKey, signal } = {}) {
  const stream = await postStream(
    "v1/chat/completions",
    { ...body, stream: true, stream_options: { include_usage: true } },
    { apiKey, signal },
  );
  for await (const payload of readEvents(stream)) {
    if (payload === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(payload);
    } catch {
      continue; // not JSON: ignore rather than break the chat
    }
    if (chunk && chunk.error) throw streamFailure(chunk.error);
    yield chunk;
  }
}

/**
 * POST v1/responses with stream=true; yields each event object ({type, sequence_number, …}) until the stream
 * ends. An `error` event, or `response.failed`, is thrown as ApiError.
 */
export async function* streamResponse(body, { apiKey, signal } = {}) {
  const stream = await postStream("v1/responses", { ...body, stream: true }, { apiKey, signal });
  for await (const payload of readEvents(stream)) {
    let event;
    try {
      event = JSON.parse(payload);
    } catch {
      continue; // not JSON: ignore rather than break the chat
    }
    if (!event || typeof event !== "object") continue;
    if (event.type === "error") throw streamFailure(event);
    if (event.type === "response.failed") throw streamFailure((event.response && event.response.error) || {});
    yield event;
  }
}
