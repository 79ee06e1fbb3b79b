// The chat page `sft serve` answers at GET /: one self-contained HTML document (its script and style
// inline, no fonts, images or libraries from anywhere), so it works offline and behind any proxy. It talks
// to the same /v1/chat/completions every client uses, streaming, and so passes the same Host/Origin checks
// (a same-origin page's Origin is the server's own) and, when the server has one, the API key.
//
// Safety: model text and error messages are inserted with textContent only, never as HTML; the response
// carries a Content-Security-Policy whose nonce is fresh per response, allowing only this document's inline
// script and style, fetches to this origin, and no framing (frame-ancestors 'none' stops clickjacking).
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';

/** Sends the page with its security headers. `modelId` is shown in the title (escaped). */
export function sendChatPage(res: ServerResponse, modelId: string, needsKey: boolean): void {
  const nonce = randomBytes(16).toString('base64');
  const html = chatPageHtml(nonce, modelId, needsKey);
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'content-security-policy':
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; ` +
      `img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  });
  res.end(html);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function chatPageHtml(nonce: string, modelId: string, needsKey: boolean): string {
  // The model id goes into the page twice: escaped in the HTML, and as JSON (with "<" escaped so it cannot
  // close the script element) for the requests.
  const idJson = JSON.stringify(modelId).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(modelId)} · sft chat</title>
<style nonce="${nonce}">
  :root { color-scheme: light dark; --line: #8884; --me: #4a7dff22; --bot: #8881; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; display: grid; grid-template-columns: 1fr 18rem; height: 100vh; }
  main { display: flex; flex-direction: column; min-width: 0; }
  header { padding: .6rem 1rem; border-bottom: 1px solid var(--line); font-weight: 600; }
  #log { flex: 1; overflow-y: auto; padding: 1rem; }
  .msg { white-space: pre-wrap; overflow-wrap: anywhere; padding: .5rem .8rem; border-radius: .5rem; margin: .4rem 0; max-width: 52rem; }
  .user { background: var(--me); margin-left: auto; }
  .assistant { background: var(--bot); }
  .error { border: 1px solid #d33; color: #d33; }
  .meta { font-size: 12px; opacity: .65; margin: -.2rem 0 .4rem; }
  form { display: flex; gap: .5rem; padding: .8rem 1rem; border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: vertical; min-height: 3rem; font: inherit; padding: .5rem; }
  button { font: inherit; padding: .4rem .9rem; }
  aside { border-left: 1px solid var(--line); padding: 1rem; overflow-y: auto; }
  aside label { display: block; margin: .7rem 0 .2rem; font-size: 13px; }
  aside input, aside textarea { width: 100%; font: inherit; }
  @media (max-width: 700px) { body { grid-template-columns: 1fr; } aside { display: none; } }
</style>
</head>
<body>
<main>
  <header>${escapeHtml(modelId)}</header>
  <div id="log" aria-live="polite"></div>
  <form id="form">
    <textarea id="input" placeholder="Message (Enter sends, Shift+Enter for a new line)" autofocus></textarea>
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" disabled>Stop</button>
    <button id="clear" type="button">New chat</button>
  </form>
</main>
<aside>
  <label for="system">System prompt</label>
  <textarea id="system" rows="4" placeholder="(none)"></textarea>
  <label for="temperature">Temperature (0 = greedy)</label>
  <input id="temperature" type="number" min="0" max="2" step="0.05" value="0.7">
  <label for="top_p">top_p</label>
  <input id="top_p" type="number" min="0" max="1" step="0.05" value="0.9">
  <label for="max_tokens">Max new tokens (empty: what the context has left)</label>
  <input id="max_tokens" type="number" min="1" step="1" value="512">
  <label for="seed">Seed (empty: random)</label>
  <input id="seed" type="number" step="1">
  <label for="key"${needsKey ? '' : ' hidden'}>API key (kept in this tab's memory only)</label>
  <input id="key" type="password" autocomplete="off"${needsKey ? '' : ' hidden'}>
</aside>
<script nonce="${nonce}">
"use strict";
const MODEL = ${idJson};
const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop");
/** The conversation as the API takes it; the system prompt is prepended per request. */
let history = [];
let aborter = null;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}
function note(text) {
  const div = document.createElement("div");
  div.className = "meta";
  div.textContent = text;
  log.appendChild(div);
}
function numberField(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}
function busy(on) {
  sendBtn.disabled = on;
  stopBtn.disabled = !on;
  document.body.dataset.state = on ? "streaming" : "idle";
}

async function send(userText) {
  history.push({ role: "user", content: userText });
  bubble("user", userText);
  const out = bubble("assistant", "");
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = { model: MODEL, messages, stream: true, stream_options: { include_usage: true } };
  for (const k of ["temperature", "top_p", "max_tokens", "seed"]) {
    const v = numberField(k);
    if (v !== undefined) body[k] = v;
  }
  const headers = { "content-type": "application/json" };
  const key = $("key").value;
  if (key) headers.authorization = "Bearer " + key;
  aborter = new AbortController();
  busy(true);
  let text = "", chunks = 0, finish = null, usage = null, painting = false;
  // The text is drawn once per frame, not once per chunk: a layout per token makes a long answer
  // quadratic, and the Stop button would wait behind it.
  const draw = () => {
    painting = false;
    out.textContent = text;
    out.dataset.chunks = String(chunks);
    log.scrollTop = log.scrollHeight;
  };
  const paint = () => {
    if (!painting) { painting = true; requestAnimationFrame(draw); }
  };
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal: aborter.signal });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error.message; } catch (_) {}
      throw new Error(msg);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      // Server-sent events: blank-line separated, each "data: <json>" or "data: [DONE]".
      while ((end = buf.indexOf("\\n\\n")) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        for (const line of event.split("\\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(obj.error.message);
          if (obj.usage) usage = obj.usage;
          const choice = obj.choices && obj.choices[0];
          if (!choice) continue;
          if (choice.delta && choice.delta.content) {
            text += choice.delta.content;
            chunks++;
            paint();
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") finish = "stopped";
    else {
      const e = bubble("error", String(err.message || err));
      e.dataset.error = "1";
    }
  } finally {
    aborter = null;
    busy(false);
  }
  // A stopped or failed answer still joins the history as far as it got, as other chat UIs keep it.
  history.push({ role: "assistant", content: text });
  draw();
  out.dataset.done = finish || "error";
  const secs = (performance.now() - t0) / 1000;
  const tokens = usage ? usage.completion_tokens : chunks;
  note((finish || "error") + " · " + tokens + " tokens · " + secs.toFixed(1) + " s" + (secs > 0 ? " · " + (tokens / secs).toFixed(1) + " tok/s" : ""));
  input.focus();
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value;
  if (!text.trim() || aborter) return;
  input.value = "";
  send(text);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("form").requestSubmit();
  }
});
stopBtn.addEventListener("click", () => aborter && aborter.abort());
$("clear").addEventListener("click", () => {
  if (aborter) aborter.abort();
  history = [];
  log.textContent = "";
});
busy(false);
</script>
</body>
</html>
`;
}
