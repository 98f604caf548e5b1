// The page talks to the same JSON API as any client. Text from the server is always inserted with
// textContent (never innerHTML), so documents cannot inject markup into the page.
"use strict";

const $ = (id) => document.getElementById(id);
let droppedFile = null;

$("api-key").value = localStorage.getItem("vectorstream.apiKey") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("vectorstream.apiKey", $("api-key").value));

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(path, body) {
  const init = { method: "POST", headers: headers(!(body instanceof FormData)) };
  init.body = body instanceof FormData ? body : JSON.stringify(body);
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw new Error(response.status + ": " + message);
  }
  return data;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Mark the query's words inside a snippet (case-insensitive, whole text kept). Words are cut to
// a rough stem ("planets" marks "planet", "planetary"), since the match is semantic, not literal.
const STOP = new Set(["the", "and", "for", "with", "from", "that", "this", "what", "where", "when", "how", "who", "are", "was", "were"]);
function stem(word) {
  return word.length > 5 ? word.replace(/(ing|ed|es|s)$/, "") : word;
}
function markTerms(container, text, query) {
  const terms = query.toLowerCase().split(/\W+/).filter((t) => t.length > 2 && !STOP.has(t)).map(stem);
  if (!terms.length) { container.append(text); return; }
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp("\\b(" + escaped.join("|") + ")\\w*", "gi");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    container.append(text.slice(last, match.index));
    container.append(el("mark", "", match[0]));
    last = match.index + match[0].length;
  }
  container.append(text.slice(last));
}

// Mark character ranges [start, end) of a text (the best chunks), scores in the title.
function markRanges(container, text, ranges) {
  const sorted = ranges.slice().sort((a, b) => a.start - b.start);
  let last = 0;
  for (const r of sorted) {
    if (r.start < last) continue; // overlapping chunks: keep the earlier mark
    container.append(text.slice(last, r.start));
    const m = el("mark", "", text.slice(r.start, r.end));
    m.title = "score " + r.score.toFixed(3);
    container.append(m);
    last = r.end;
  }
  container.append(text.slice(last));
}

// Image hits (an image model's records: empty text, metadata.media_type "image/...") show the file
// name and what the store knows of it, and a thumbnail the service makes of the file when that
// file is one the collection ingested (GET /v1/sources/thumbnail; fetched with the API key, so it
// cannot be an <img src>). Object URLs of the last results are released before new ones load.
let thumbnailUrls = [];

function isImageHit(hit) {
  const media = hit.metadata && hit.metadata.media_type;
  return typeof media === "string" && media.startsWith("image/") && !hit.text;
}

function baseName(path) {
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1] || String(path);
}

function imageHit(hit, collection) {
  const box = el("div", "image-hit");
  const figure = el("div", "thumb-frame");
  box.append(figure);
  const meta = hit.metadata;
  const facts = [meta.media_type];
  if (meta.width && meta.height) facts.push(meta.width + "×" + meta.height);
  if (meta.bytes) facts.push(Math.max(1, Math.round(meta.bytes / 1024)) + " KB");
  const caption = el("div", "image-caption");
  caption.append(el("span", "image-name", baseName(hit.source)));
  caption.append(el("span", "muted", " · " + facts.join(" · ")));
  box.append(caption);
  const params = new URLSearchParams({ source: hit.source });
  if (collection) params.set("collection", collection);
  fetch("/v1/sources/thumbnail?" + params, { headers: headers(false) })
    .then((r) => (r.ok ? r.blob() : null))
    .then((blob) => {
      if (!blob) return;
      const url = URL.createObjectURL(blob);
      thumbnailUrls.push(url);
      const img = el("img", "thumb");
      img.alt = baseName(hit.source);
      img.src = url;
      figure.append(img);
    })
    .catch(() => {});
  return box;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("search-query").value.trim();
  const list = $("search-results");
  list.replaceChildren();
  for (const url of thumbnailUrls) URL.revokeObjectURL(url);
  thumbnailUrls = [];
  $("search-status").className = "muted";
  $("search-status").textContent = "Searching…";
  const body = { query, k: Number($("search-k").value) || 10 };
  const collection = $("search-collection").value.trim();
  if (collection) body.collection = collection;
  const started = performance.now();
  try {
    const result = await call("/v1/search", body);
    $("search-status").textContent = result.data.length + " results in " + Math.round(performance.now() - started) + " ms";
    for (const hit of result.data) {
      const item = el("li", "hit");
      item.append(el("span", "score", hit.score.toFixed(3)));
      if (isImageHit(hit)) {
        item.classList.add("image");
        item.append(imageHit(hit, collection));
        item.append(el("div", "source", hit.source));
        list.append(item);
        continue;
      }
      const snippet = el("span", "snippet");
      markTerms(snippet, hit.text, query);
      item.append(snippet);
      // Offsets point into the document text; a chunk may span sections, from section_index on.
      const where = hit.source + (hit.page != null ? " · page " + hit.page : "") +
        " · section " + (hit.section_index ?? 0) + " · chars " + hit.start + "–" + hit.end;
      item.append(el("div", "source", where));
      list.append(item);
    }
  } catch (error) {
    $("search-status").className = "error";
    $("search-status").textContent = error.message;
  }
});

function setFile(file) {
  droppedFile = file;
  $("hl-file").textContent = file ? file.name + " (" + file.size + " bytes)" : "none";
}

const drop = $("hl-drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
});
$("hl-file-input").addEventListener("change", (e) => setFile(e.target.files[0] || null));
$("hl-text").addEventListener("input", () => { if ($("hl-text").value) setFile(null); });

$("hl-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("hl-query").value.trim();
  const k = Number($("hl-k").value) || 3;
  const chunkTokens = Number($("hl-chunk").value) || 32;
  const list = $("hl-results");
  const doc = $("hl-document");
  list.replaceChildren();
  doc.replaceChildren();
  $("hl-status").className = "muted";
  $("hl-status").textContent = "Highlighting…";
  const started = performance.now();
  try {
    let result;
    let text = null;
    if (droppedFile) {
      const form = new FormData();
      form.append("query", query);
      form.append("k_per_document", String(k));
      form.append("chunk_tokens", String(chunkTokens));
      form.append("files", droppedFile, droppedFile.name);
      result = await call("/v1/highlights", form);
    } else {
      text = $("hl-text").value;
      if (!text.trim()) throw new Error("paste some text or drop a file first");
      result = await call("/v1/highlights", {
        query, k_per_document: k, documents: [{ id: "pasted", text }],
        chunking: { splitter: "sentences", chunk_tokens: chunkTokens, overlap: 0 },
      });
    }
    const found = result.data[0];
    $("hl-status").textContent = found.highlights.length + " of " + found.chunks + " chunks" +
      (found.cached ? " (cached)" : "") + " in " + Math.round(performance.now() - started) + " ms";
    for (const h of found.highlights) {
      const item = el("li", "highlight");
      item.append(el("span", "score", h.score.toFixed(3)));
      item.append(el("span", "snippet", h.text));
      const where = (h.page != null ? "page " + h.page + " · " : "") + "section " + h.section_index +
        " · chars " + h.start + "–" + h.end;
      item.append(el("div", "source", where));
      list.append(item);
    }
    if (text !== null) markRanges(doc, text, found.highlights);
  } catch (error) {
    $("hl-status").className = "error";
    $("hl-status").textContent = error.message;
  }
});

fetch("/v1/models", { headers: headers(false) })
  .then((r) => (r.ok ? r.json() : null))
  .then((data) => {
    if (!data || !data.data.length) return;
    const served = data.data[0];
    const kind = served.kind && served.kind !== "dense" ? " · " + served.kind : "";
    $("model").textContent = served.id + " · " + served.dim + " dimensions" + kind;
  })
  .catch(() => {});
