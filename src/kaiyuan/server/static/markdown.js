// kaiyuan web chat: a small Markdown renderer for untrusted model output.
//
// Owns: turning Markdown text into DOM nodes. Safety comes from construction, not from cleaning: every piece of
// source text becomes a Text node (so "<script>" or "<img onerror=...>" is shown as characters, never parsed as
// HTML), and elements are created one by one from a fixed list (p, h1-h6, strong, em, del, code, pre, a, ul, ol,
// li, blockquote, hr, br, table parts, and the code block's header with its copy button). The only attribute that
// carries source text is a link's href, and only for http:, https: and mailto: URLs. Images are never loaded (that
// would send a request off the machine): they become links. This module never touches innerHTML.
//
// Must not know: the chat, the server, storage. Supported syntax: ATX headings, paragraphs (a single newline is a
// line break), fenced code blocks (``` and ~~~; an unclosed fence runs to the end, which suits streaming), block
// quotes, nested bullet/numbered lists with task boxes, GitHub tables, horizontal rules; inline code, **strong**,
// *em*, ~~strike~~, [links](url), <autolinks>, bare URLs, backslash escapes and <br>.

const SAFE_SCHEMES = /^(https?:|mailto:)/i;
const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_DELIMITER = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>\"'";
const MAX_DEPTH = 12; // nesting of quotes/lists; deeper input is shown as text
const MAX_LINK_TEXT = 1000; // a "[" further than this from its "]" is text: keeps many "[" from costing n²
const PLAIN = /[^\\\n`<!\[*_~h]+/y; // characters no inline rule starts with, taken in one step

/**
 * Render Markdown source as a DocumentFragment of whitelisted elements.
 * @param {string} source untrusted text
 * @param {Document} [doc]
 * @returns {DocumentFragment}
 */
export function renderMarkdown(source, doc = document) {
  const fragment = doc.createDocumentFragment();
  const lines = String(source ?? "")
    .replace(/\r\n?/g, "\n")
    .split("\n");
  renderBlocks(lines, fragment, doc, 0);
  return fragment;
}

/**
 * Render inline Markdown (no blocks) into a DocumentFragment.
 * @param {string} source
 * @param {Document} [doc]
 */
export function renderInline(source, doc = document) {
  const fragment = doc.createDocumentFragment();
  appendInline(String(source ?? ""), fragment, doc, false);
  return fragment;
}

function el(doc, tag, className) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  return node;
}

// ------------------------------------------------------------------------------------------------- blocks

function isBlockStart(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_DELIMITER.test(next) && next.includes("-"))
  );
}

function renderBlocks(lines, parent, doc, depth) {
  if (depth > MAX_DEPTH) {
    const p = el(doc, "p");
    p.textContent = lines.join("\n");
    parent.appendChild(p);
    return;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*$/.test(line)) {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      i = fencedCode(lines, i, m, parent, doc);
    } else if ((m = HEADING.exec(line))) {
      const h = el(doc, `h${m[1].length}`);
      appendInline(m[2] || "", h, doc, false);
      parent.appendChild(h);
      i += 1;
    } else if (RULE.test(line)) {
      parent.appendChild(el(doc, "hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !/^\s*$/.test(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        if (!q && isBlockStart(lines[i], lines[i + 1])) break;
        inner.push(q ? q[1] : lines[i]);
        i += 1;
      }
      const bq = el(doc, "blockquote");
      renderBlocks(inner, bq, doc, depth + 1);
      parent.appendChild(bq);
    } else if (LIST_ITEM.test(line)) {
      i = list(lines, i, parent, doc, depth);
    } else if (
      line.includes("|") &&
      i + 1 < lines.length &&
      TABLE_DELIMITER.test(lines[i + 1]) &&
      lines[i + 1].includes("-")
    ) {
      i = table(lines, i, parent, doc);
    } else {
      const para = [];
      while (
        i < lines.length &&
        !/^\s*$/.test(lines[i]) &&
        (para.length === 0 || !isBlockStart(lines[i], lines[i + 1]))
      ) {
        para.push(lines[i].trim());
        i += 1;
      }
      const p = el(doc, "p");
      appendInline(para.join("\n"), p, doc, false);
      parent.appendChild(p);
    }
  }
}

function fencedCode(lines, start, match, parent, doc) {
  const fence = match[1];
  const lang = (match[2] || "").replace(/[^\w#+.-]/g, "").slice(0, 32);
  const indent = lines[start].length - lines[start].trimStart().length;
  const closer = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
  const body = [];
  let i = start + 1;
  while (i < lines.length && !closer.test(lines[i])) {
    let text = lines[i];
    for (let k = 0; k < indent && text.startsWith(" "); k += 1) text = text.slice(1);
    body.push(text);
    i += 1;
  }
  const block = el(doc, "div", "code-block");
  const head = el(doc, "div", "code-head");
  const label = el(doc, "span", "code-lang");
  label.textContent = lang || "text";
  const copy = el(doc, "button", "copy-code");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", lang ? `Copy ${lang} code` : "Copy code");
  head.append(label, copy);
  const pre = el(doc, "pre");
  const code = el(doc, "code");
  if (lang) code.dataset.lang = lang;
  code.textContent = body.join("\n");
  pre.appendChild(code);
  block.append(head, pre);
  parent.appendChild(block);
  return i < lines.length ? i + 1 : i; // skip the closing fence when there is one
}

function list(lines, start, parent, doc, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const baseIndent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const listEl = el(doc, ordered ? "ol" : "ul");
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) listEl.start = n;
  }
  const items = [];
  let loose = false;
  let i = start;
  let blankBefore = false;
  while (i < lines.length) {
    const line = lines[i];
    const m = LIST_ITEM.exec(line);
    if (m && m[1].length <= baseIndent + 1 && /\d/.test(m[2]) === ordered) {
      if (blankBefore && items.length) loose = true;
      items.push({
        lines: [m[4] || ""],
        contentIndent: m[1].length + m[2].length + (m[3] ? m[3].length - (m[4] || "").length : 1),
      });
      blankBefore = false;
      i += 1;
      continue;
    }
    if (m && m[1].length <= baseIndent + 1) break; // a list of the other kind starts
    if (/^\s*$/.test(line)) {
      // a blank line ends the list unless the next line is indented (continuation) or another item
      const next = lines[i + 1];
      if (next === undefined) break;
      const nm = LIST_ITEM.exec(next);
      const nextIndent = next.length - next.trimStart().length;
      if ((nm && nm[1].length <= baseIndent + 1 && /\d/.test(nm[2]) === ordered) || nextIndent > baseIndent + 1) {
        blankBefore = true;
        items[items.length - 1].lines.push("");
        i += 1;
        continue;
      }
      break;
    }
    const indent = line.length - line.trimStart().length;
    if (indent > baseIndent) {
      const item = items[items.length - 1];
      if (blankBefore) loose = true;
      blankBefore = false;
      const strip = Math.min(indent, item.contentIndent);
      item.lines.push(line.slice(strip));
      i += 1;
      continue;
    }
    if (isBlockStart(line, lines[i + 1]) || blankBefore) break;
    items[items.length - 1].lines.push(line.trim()); // lazy continuation of the item's paragraph
    i += 1;
  }
  for (const item of items) {
    const li = el(doc, "li");
    let itemLines = item.lines;
    const task = /^\[([ xX])\][ \t]+/.exec(itemLines[0]);
    if (task) {
      const box = el(doc, "span", "task-box");
      box.textContent = task[1] === " " ? "☐ " : "☑ ";
      li.appendChild(box);
      li.classList.add("task");
      itemLines = [itemLines[0].slice(task[0].length), ...itemLines.slice(1)];
    }
    while (itemLines.length && /^\s*$/.test(itemLines[itemLines.length - 1])) itemLines = itemLines.slice(0, -1);
    const holder = doc.createDocumentFragment();
    renderBlocks(itemLines, holder, doc, depth + 1);
    // tight lists: a lone paragraph in an item is shown without <p>
    if (!loose && holder.firstChild && holder.firstChild.nodeName === "P") {
      const p = holder.firstChild;
      while (p.firstChild) holder.insertBefore(p.firstChild, p);
      holder.removeChild(p);
    }
    li.appendChild(holder);
    listEl.appendChild(li);
  }
  parent.appendChild(listEl);
  return i;
}

function splitRow(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const cells = [];
  let cell = "";
  let inCode = 0;
  for (let k = 0; k < text.length; k += 1) {
    const c = text[k];
    if (c === "\\" && text[k + 1] === "|") {
      cell += "|";
      k += 1;
    } else if (c === "`") {
      let run = 1;
      while (text[k + run] === "`") run += 1;
      inCode = inCode === run ? 0 : inCode || run;
      cell += "`".repeat(run);
      k += run - 1;
    } else if (c === "|" && !inCode) {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += c;
    }
  }
  cells.push(cell.trim());
  return cells;
}

function table(lines, start, parent, doc) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((spec) => {
    const left = spec.startsWith(":");
    const right = spec.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : "";
  });
  const wrap = el(doc, "div", "table-wrap");
  const tableEl = el(doc, "table");
  const thead = el(doc, "thead");
  const headRow = el(doc, "tr");
  header.forEach((text, k) => {
    const th = el(doc, "th", aligns[k] ? `align-${aligns[k]}` : "");
    appendInline(text, th, doc, false);
    headRow.appendChild(th);
  });
  thead.appendChild(headRow);
  tableEl.appendChild(thead);
  const tbody = el(doc, "tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].includes("|") && !/^\s*$/.test(lines[i])) {
    const cells = splitRow(lines[i]);
    const tr = el(doc, "tr");
    for (let k = 0; k < header.length; k += 1) {
      const td = el(doc, "td", aligns[k] ? `align-${aligns[k]}` : "");
      appendInline(cells[k] || "", td, doc, false);
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    i += 1;
  }
  tableEl.appendChild(tbody);
  wrap.appendChild(tableEl);
  parent.appendChild(wrap);
  return i;
}

// ------------------------------------------------------------------------------------------------- inline

function safeUrl(url) {
  const trimmed = url.trim();
  return SAFE_SCHEMES.test(trimmed) && !/[\s<>"]/.test(trimmed) ? trimmed : null;
}

function link(doc, href) {
  const a = el(doc, "a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

// Find "](url)" after a link text starting at `open` ("[" position); returns {text, url, end} or null.
function parseLink(src, open) {
  let depth = 0;
  let k = open;
  const limit = Math.min(src.length, open + MAX_LINK_TEXT);
  for (; k < limit; k += 1) {
    const c = src[k];
    if (c === "\\") {
      k += 1;
    } else if (c === "`") {
      const close = src.indexOf("`", k + 1);
      if (close > 0) k = close;
    } else if (c === "[") {
      depth += 1;
    } else if (c === "]") {
      depth -= 1;
      if (depth === 0) break;
    }
  }
  if (k >= limit || src[k + 1] !== "(") return null;
  const rest = /^\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+("[^"]*"|'[^']*'))?\s*\)/.exec(
    src.slice(k + 1),
  );
  if (!rest) return null;
  return { text: src.slice(open + 1, k), url: rest[1], end: k + 1 + rest[0].length };
}

const BARE_URL = /^https?:\/\/[^\s<>"]*[^\s<>".,:;'!?)\]*_~]/;

function isWordChar(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

// Find the closing delimiter run for emphasis opened at `start` with `run` characters of `ch`.
function findCloser(src, from, ch, run) {
  for (let k = from; k < src.length; k += 1) {
    const c = src[k];
    if (c === "\\") {
      k += 1;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (src[k + n] === "`") n += 1;
      const close = src.indexOf("`".repeat(n), k + n);
      if (close > 0) {
        k = close + n - 1;
        continue;
      }
    }
    if (c !== ch) continue;
    let n = 1;
    while (src[k + n] === ch) n += 1;
    const prev = src[k - 1];
    const after = src[k + n];
    const rightFlanking = prev !== undefined && !/\s/.test(prev);
    const okIntraword = ch !== "_" || !isWordChar(after);
    if (n >= run && rightFlanking && okIntraword && k > from) return k + (n - run);
    k += n - 1;
  }
  return -1;
}

function appendInline(src, parent, doc, inLink) {
  let text = "";
  const noCloser = new Set(); // delimiter kinds already known to have no closer further on (keeps this linear)
  const flush = () => {
    if (text) {
      parent.appendChild(doc.createTextNode(text));
      text = "";
    }
  };
  let i = 0;
  while (i < src.length) {
    PLAIN.lastIndex = i;
    const plain = PLAIN.exec(src);
    if (plain) {
      text += plain[0];
      i += plain[0].length;
      continue;
    }
    const c = src[i];
    const rest = c === "<" || c === "h" ? src.slice(i, i + 2048) : "";
    let m;
    if (c === "\\" && i + 1 < src.length && ESCAPABLE.includes(src[i + 1])) {
      text += src[i + 1];
      i += 2;
    } else if (c === "\n") {
      flush();
      parent.appendChild(el(doc, "br"));
      i += 1;
    } else if (c === "`") {
      let n = 1;
      while (src[i + n] === "`") n += 1;
      const close = src.indexOf("`".repeat(n), i + n);
      let after = close;
      while (after >= 0 && src[after + n] === "`") after = src.indexOf("`".repeat(n), after + 1);
      if (after < 0) {
        text += "`".repeat(n);
        i += n;
      } else {
        flush();
        const code = el(doc, "code");
        let body = src.slice(i + n, after).replace(/\n/g, " ");
        if (/^ .* $/.test(body) && body.trim()) body = body.slice(1, -1);
        code.textContent = body;
        parent.appendChild(code);
        i = after + n;
      }
    } else if ((m = /^<br\s*\/?>/i.exec(rest))) {
      flush();
      parent.appendChild(el(doc, "br"));
      i += m[0].length;
    } else if ((m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(rest)) && !inLink) {
      flush();
      const a = link(doc, m[1]);
      a.textContent = m[1];
      parent.appendChild(a);
      i += m[0].length;
    } else if ((c === "!" && src[i + 1] === "[") || c === "[") {
      const image = c === "!";
      const parsed = parseLink(src, image ? i + 1 : i);
      const href = parsed ? safeUrl(parsed.url) : null;
      if (parsed && href && !inLink) {
        flush();
        const a = link(doc, href);
        if (image) {
          a.className = "image-link";
          a.textContent = `Image: ${parsed.text || parsed.url}`;
          a.title = "Image not loaded (the chat makes no outside requests): opens in a new tab";
        } else {
          appendInline(parsed.text, a, doc, true);
        }
        parent.appendChild(a);
        i = parsed.end;
      } else if (parsed) {
        // unsafe or nested link: keep the text, drop the link
        flush();
        if (image) text += parsed.text;
        else appendInline(parsed.text, parent, doc, inLink);
        i = parsed.end;
      } else {
        text += c;
        i += 1;
      }
    } else if (!inLink && (m = BARE_URL.exec(rest)) && !isWordChar(src[i - 1])) {
      flush();
      const a = link(doc, m[0]);
      a.textContent = m[0];
      parent.appendChild(a);
      i += m[0].length;
    } else if (c === "*" || c === "_" || (c === "~" && src[i + 1] === "~")) {
      let n = 1;
      while (src[i + n] === c) n += 1;
      const next = src[i + n];
      const leftFlanking = next !== undefined && !/\s/.test(next);
      const intraword = c === "_" && isWordChar(src[i - 1]);
      const run = n;
      const kind = c + run;
      const usable = leftFlanking && !intraword && (c === "~" ? n === 2 : n <= 3) && !noCloser.has(kind);
      const close = usable ? findCloser(src, i + n, c, run) : -1;
      if (usable && close < 0) noCloser.add(kind);
      if (close < 0) {
        text += c.repeat(n);
        i += n;
      } else {
        flush();
        const inner = src.slice(i + n, close);
        let node;
        if (c === "~") node = el(doc, "del");
        else if (run === 3) {
          node = el(doc, "em");
          const strong = el(doc, "strong");
          node.appendChild(strong);
          appendInline(inner, strong, doc, inLink);
          parent.appendChild(node);
          i = close + run;
          continue;
        } else node = el(doc, run === 2 ? "strong" : "em");
        appendInline(inner, node, doc, inLink);
        parent.appendChild(node);
        i = close + run;
      }
    } else {
      text += c;
      i += 1;
    }
  }
  flush();
}
