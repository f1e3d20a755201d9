// The inspector operator console: one small hand-kept script, no build step, no framework.
//
// Rules it keeps:
// * every value from the daemon goes into the page as text (textContent) or as an attribute
//   value, never as HTML (no innerHTML anywhere);
// * tokens live in this tab's sessionStorage and travel only as an Authorization header,
//   never in a URL, a cookie or a log;
// * polling backs off on errors and pauses while the tab is hidden; the page keeps a bounded
//   number of thumbnails and releases the memory of each one it drops.
"use strict";

(function () {
  const body = document.body;
  const PAGE = body.dataset.page;
  const STORE = { read: "inspector.readToken", admin: "inspector.adminToken" };
  const POLL_MS = 2000;
  const MAX_BACKOFF_MS = 30000;
  const MAX_THUMBS = 24;

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function say(text) {
    document.getElementById("status").textContent = text;
  }

  function fixed(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "–";
  }

  function percent(value) {
    return typeof value === "number" ? Math.round(value * 100) + " %" : "–";
  }

  // A frame id as one path component: "/" "?" "#" "%" encoded, dots too (so "a/../b" can
  // never become a dot segment that the browser resolves away).
  function frameUrl(frameId, suffix) {
    return "/v1/results/" + encodeURIComponent(frameId).replace(/\./g, "%2E") + "/" + suffix;
  }

  function detailHref(frameId) {
    return "/frame?id=" + encodeURIComponent(frameId);
  }

  // --- tokens ---------------------------------------------------------------------------------

  function storedToken(kind) {
    return sessionStorage.getItem(STORE[kind]) || "";
  }

  const asking = {};

  // Asks for a token in the page's own form (never window.prompt); one question per kind at a
  // time, however many requests were refused meanwhile.
  function askToken(kind) {
    if (asking[kind]) return asking[kind];
    const panel = document.getElementById("token-panel");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    document.getElementById("token-label").textContent =
      kind === "admin"
        ? "Admin token (http.admin_token), needed to label frames"
        : "Read token (http.read_token), needed to see results";
    input.value = "";
    panel.hidden = false;
    input.focus();
    asking[kind] = new Promise(function (resolve) {
      function finish(value) {
        form.removeEventListener("submit", submitted);
        document.getElementById("token-cancel").removeEventListener("click", cancelled);
        panel.hidden = true;
        delete asking[kind];
        resolve(value);
      }
      function submitted(event) {
        event.preventDefault();
        const value = input.value.trim();
        input.value = "";
        if (value) sessionStorage.setItem(STORE[kind], value);
        finish(value || null);
      }
      function cancelled() {
        finish(null);
      }
      form.addEventListener("submit", submitted);
      document.getElementById("token-cancel").addEventListener("click", cancelled);
    });
    return asking[kind];
  }

  // fetch() with the right bearer token; on a 401 the token is forgotten and asked for once.
  async function api(path, options) {
    const opts = options || {};
    const write = opts.method && opts.method !== "GET";
    const kind = write ? "admin" : "read";
    for (let attempt = 0; ; attempt += 1) {
      const headers = new Headers(opts.headers || {});
      // The admin token reads too: an operator who gave it is not asked again for reads.
      const sent = write || !storedToken("read") ? "admin" : "read";
      const token = storedToken(sent);
      if (token) headers.set("Authorization", "Bearer " + token);
      const response = await fetch(path, {
        method: opts.method || "GET",
        body: opts.body,
        headers: headers,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
      if (response.status !== 401 || attempt > 0) return response;
      if (token) sessionStorage.removeItem(STORE[sent]); // refused: a wrong token is forgotten
      if (!(await askToken(kind))) return response;
    }
  }

  async function problemText(response) {
    try {
      const data = await response.json();
      return typeof data.error === "string" ? data.error : response.statusText;
    } catch (error) {
      return response.statusText || String(response.status);
    }
  }

  // Shows a picture fetched with the bearer header, from memory (an <img src> cannot send a
  // header); the previous picture of the element is released.
  async function showImage(img, frameId, view) {
    const response = await api(frameUrl(frameId, "image") + "?view=" + view);
    if (!response.ok) {
      img.removeAttribute("src");
      img.alt = view + " not available";
      return false;
    }
    const url = URL.createObjectURL(await response.blob());
    if (img.dataset.blob) URL.revokeObjectURL(img.dataset.blob);
    img.dataset.blob = url;
    img.src = url;
    return true;
  }

  function release(node) {
    node.querySelectorAll("img[data-blob]").forEach(function (img) {
      URL.revokeObjectURL(img.dataset.blob);
    });
  }

  // Calls step() every POLL_MS while the tab is visible; doubles the wait after a failure.
  function poll(step) {
    let wait = POLL_MS;
    async function tick() {
      if (!document.hidden) {
        try {
          await step();
          wait = POLL_MS;
        } catch (error) {
          wait = Math.min(wait * 2, MAX_BACKOFF_MS);
          say("Connection lost: retrying in " + Math.round(wait / 1000) + " s");
        }
      }
      setTimeout(tick, wait);
    }
    tick();
  }

  async function labelFrame(frameId, label, kind, note) {
    const payload = { label: label };
    if (kind) payload.kind = kind;
    if (note) payload.note = note;
    const response = await api(frameUrl(frameId, "label"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    if (!response.ok) {
      say("Label not saved: " + (await problemText(response)));
      return null;
    }
    return response.json();
  }

  // A mislabelled frame goes back to unlabelled (DELETE; nothing changes when it has none).
  async function clearLabel(frameId) {
    const response = await api(frameUrl(frameId, "label"), { method: "DELETE" });
    if (!response.ok) {
      say("Label not removed: " + (await problemText(response)));
      return null;
    }
    return response.json();
  }

  // --- overview: tiles ------------------------------------------------------------------------

  function fact(list, name, value) {
    list.append(el("dt", null, name), el("dd", null, value));
  }

  function tile(data) {
    const last = data.last;
    const node = el("article", "tile " + (data.up ? "up" : "down"));
    if (last && last.is_anomalous) node.classList.add("flagged");
    node.dataset.camera = data.camera;
    node.append(el("h3", "camera", data.camera));
    node.append(el("p", "state", (data.up ? "up" : "down") + " · " + data.state));
    const verdict = el("p", "verdict");
    if (last) {
      verdict.textContent = last.is_anomalous ? "FLAGGED" : "good";
      const meter = el("meter");
      meter.min = 0;
      meter.max = 1;
      meter.value = last.score;
      meter.high = last.threshold;
      meter.optimum = 0;
      node.append(verdict, meter);
      node.append(el("p", "score", "score " + fixed(last.score, 2) + " / threshold " +
        fixed(last.threshold, 2)));
    } else {
      verdict.textContent = "no result yet";
      node.append(verdict);
    }
    const facts = el("dl", "facts");
    fact(facts, "frames/s", fixed(data.frames_per_s, 1));
    fact(facts, "late", percent(data.late_share));
    fact(facts, "model", data.model || (last ? last.model : "–"));
    fact(facts, "recipe", data.recipe);
    fact(facts, "false alarms", data.labels.false_alarm);
    fact(facts, "catches", data.labels.defect);
    fact(facts, "missed", data.labels.missed_defect);
    node.append(facts);
    return node;
  }

  async function refreshTiles() {
    const response = await api("/v1/console/overview");
    if (!response.ok) {
      say("Overview: " + (await problemText(response)));
      return;
    }
    const data = await response.json();
    const box = document.getElementById("tiles");
    const tiles = data.tiles.map(tile);
    if (!tiles.length) tiles.push(el("p", "empty", "No camera yet."));
    box.replaceChildren.apply(box, tiles);
    say(data.retention ? data.retained + " frame(s) retained" : "retention off");
  }

  // --- overview: the live stream of flagged frames -------------------------------------------

  let newest = null;

  function thumb(item) {
    const link = el("a", "thumb");
    link.href = detailHref(item.frame_id);
    link.dataset.frameId = item.frame_id;
    const img = el("img");
    img.alt = "overlay of a flagged frame";
    link.append(img, el("span", "camera", item.camera_id),
      el("span", "score", "score " + fixed(item.score, 2)));
    showImage(img, item.frame_id, item.views.indexOf("overlay") >= 0 ? "overlay" : "frame");
    return link;
  }

  async function refreshStream() {
    let path = "/v1/results?flagged=true&limit=" + MAX_THUMBS;
    if (newest !== null) path += "&after=" + newest;
    const response = await api(path);
    if (response.status === 404) return; // retention off: the notice says so
    if (!response.ok) {
      say("Flagged frames: " + (await problemText(response)));
      return;
    }
    const page = await response.json();
    if (!page.items.length) return;
    newest = Math.max(newest === null ? 0 : newest, page.items[0].seq);
    const box = document.getElementById("stream");
    box.querySelectorAll("p.empty").forEach(function (node) { node.remove(); });
    box.prepend.apply(box, page.items.map(thumb));
    while (box.children.length > MAX_THUMBS) {
      release(box.lastElementChild);
      box.lastElementChild.remove();
    }
  }

  // --- review queue ---------------------------------------------------------------------------

  // Each key acts on the frame shown when it was pressed; the queue moves on at once and the
  // labels are saved one after another behind it (a fast operator never loses one). A frame
  // whose save failed is not marked decided, so it comes back with the next page.
  const review = {
    queue: [], skipped: new Set(), decided: new Set(), before: null, current: null,
    saving: Promise.resolve(),
  };

  async function fillQueue() {
    let path = "/v1/results?flagged=true&label=unlabelled&limit=50";
    if (review.before !== null) path += "&before=" + review.before;
    const response = await api(path);
    if (!response.ok) {
      document.getElementById("queue-empty").textContent = await problemText(response);
      return;
    }
    const page = await response.json();
    review.before = page.next_before;
    review.queue = page.items.filter(function (item) {
      return !review.skipped.has(item.frame_id) && !review.decided.has(item.frame_id);
    });
  }

  async function nextFrame() {
    review.current = null; // no key acts while the next frame is being found
    if (!review.queue.length) await fillQueue();
    const current = review.queue.shift() || null;
    const panel = document.getElementById("current");
    const empty = document.getElementById("queue-empty");
    if (!current) {
      panel.hidden = true;
      empty.hidden = false;
      empty.textContent = "Nothing to review: every flagged frame is labelled or skipped.";
      review.before = null; // new frames come at the top: look there again later
      setTimeout(function () { if (!review.current) nextFrame(); }, 5 * POLL_MS);
      return;
    }
    empty.hidden = true;
    panel.hidden = false;
    document.getElementById("current-camera").textContent = current.camera_id;
    document.getElementById("current-score").textContent =
      "score " + fixed(current.score, 2) + " / threshold " + fixed(current.threshold, 2);
    document.getElementById("current-id").textContent = current.frame_id;
    document.getElementById("current-link").href = detailHref(current.frame_id);
    document.getElementById("queue-count").textContent = review.queue.length + " more loaded";
    review.current = current;
    showImage(document.getElementById("current-image"), current.frame_id,
      current.views.indexOf("overlay") >= 0 ? "overlay" : "frame");
  }

  function decide(frame, label, kind) {
    if (!frame || review.decided.has(frame.frame_id)) return;
    review.decided.add(frame.frame_id);
    if (review.decided.size > 5000) review.decided.clear(); // saved ones are no longer listed
    review.saving = review.saving.then(async function () {
      const saved = await labelFrame(frame.frame_id, label, kind, null);
      if (saved) {
        say("Labelled " + saved.frame_id + " as " + saved.label.replace("_", " ") +
          (saved.kind ? " (" + saved.kind + ")" : ""));
      } else {
        review.decided.delete(frame.frame_id);
      }
    });
    if (review.current === frame) nextFrame();
  }

  let kindFor = null; // the frame "d" was pressed on

  function askKind() {
    const form = document.getElementById("kind-form");
    const input = document.getElementById("kind-input");
    kindFor = review.current;
    form.hidden = false;
    input.value = "";
    input.focus();
  }

  function startReview() {
    const form = document.getElementById("kind-form");
    const input = document.getElementById("kind-input");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      form.hidden = true;
      decide(kindFor, "defect", input.value.trim() || null);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        form.hidden = true;
        input.blur();
      }
    });
    document.addEventListener("keydown", function (event) {
      const typing = event.target instanceof HTMLInputElement ||
        event.target instanceof HTMLTextAreaElement;
      if (typing || event.ctrlKey || event.metaKey || event.altKey || !review.current) return;
      if (!document.getElementById("token-panel").hidden) return;
      if (event.key === "f") {
        event.preventDefault();
        decide(review.current, "false_alarm", null);
      } else if (event.key === "d") {
        event.preventDefault();
        askKind();
      } else if (event.key === "s") {
        event.preventDefault();
        review.skipped.add(review.current.frame_id);
        if (review.skipped.size > 1000) review.skipped.clear();
        nextFrame();
      }
    });
    nextFrame();
  }

  // --- one frame ------------------------------------------------------------------------------

  async function showDetail() {
    const frameId = body.dataset.frameId || "";
    const missing = document.getElementById("detail-missing");
    const response = await api(frameUrl(frameId, "detail"));
    if (!response.ok) {
      missing.hidden = false;
      missing.textContent = await problemText(response);
      return;
    }
    const data = await response.json();
    const frame = data.frame;
    const result = data.result;
    const facts = document.getElementById("facts");
    facts.replaceChildren();
    fact(facts, "camera", frame.camera_id);
    fact(facts, "verdict", frame.is_anomalous ? "flagged" : "good");
    fact(facts, "score", fixed(frame.score, 3) + " (threshold " + fixed(frame.threshold, 3) + ")");
    fact(facts, "model", frame.model_name);
    fact(facts, "label", frame.label ? frame.label + (frame.kind ? " (" + frame.kind + ")" : "")
      : "none");
    if (frame.note) fact(facts, "note", frame.note);
    fact(facts, "captured at", frame.captured_at || "–");
    fact(facts, "processed at", frame.processed_at);
    fact(facts, "retained at", frame.retained_at);
    const rows = document.querySelector("#regions tbody");
    rows.replaceChildren();
    if (result) {
      fact(facts, "thresholds", "image " + fixed(result.threshold.image, 3) + ", pixel " +
        fixed(result.threshold.pixel, 3) + " (from " + result.threshold.source + ")");
      fact(facts, "checkpoint", result.model.backbone + " " +
        result.model.checkpoint_sha256.slice(0, 12));
      fact(facts, "latency ms", "total " + fixed(result.latency_ms.total, 1) + " (inference " +
        fixed(result.latency_ms.inference, 1) + ")");
      fact(facts, "image size", result.image_size[1] + " × " + result.image_size[0] + " px");
      result.defects.forEach(function (defect) {
        const row = el("tr");
        defect.bbox.concat([defect.area_px, fixed(defect.max_score, 3),
          fixed(defect.mean_score, 3)]).forEach(function (value) {
          row.append(el("td", null, value));
        });
        rows.append(row);
      });
    }
    ["overlay", "mask", "frame"].forEach(function (view) {
      const img = document.getElementById("view-" + view);
      if (frame.views.indexOf(view) >= 0) showImage(img, frame.frame_id, view);
      else img.closest("figure").hidden = true;
    });
  }

  function startDetail() {
    const frameId = body.dataset.frameId || "";
    document.getElementById("label-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      const label = document.getElementById("label-select").value;
      const kind = document.getElementById("label-kind").value.trim();
      const note = document.getElementById("label-note").value;
      const saved = await labelFrame(frameId, label, label === "false_alarm" ? null : kind, note);
      if (saved) {
        say("Saved: " + saved.label.replace("_", " "));
        showDetail();
      }
    });
    document.getElementById("label-clear").addEventListener("click", async function () {
      if (await clearLabel(frameId)) {
        say("Label removed");
        showDetail();
      }
    });
    showDetail();
  }

  // --- start ----------------------------------------------------------------------------------

  document.getElementById("forget-tokens").addEventListener("click", function () {
    sessionStorage.removeItem(STORE.read);
    sessionStorage.removeItem(STORE.admin);
    say("Tokens forgotten");
  });

  if (PAGE === "index") {
    poll(refreshTiles);
    if (body.dataset.retention !== "off") poll(refreshStream);
  } else if (PAGE === "review") {
    if (body.dataset.retention !== "off") startReview();
    else document.getElementById("queue-empty").textContent = "Retention is off.";
  } else if (PAGE === "frame") {
    startDetail();
  }
})();
