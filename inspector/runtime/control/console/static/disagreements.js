// The console's disagreements page: retained frames where a camera's shadow model judged
// otherwise than the served one. Same rules as console.js: values go in as text only, tokens
// stay in this tab's sessionStorage and travel only as an Authorization header.
//
// Rows are kept by frame id between polls: a frame still listed keeps its row and its loaded
// pictures (only its label is updated), so the page neither flickers nor fetches 48 pictures
// again every poll; the pictures of rows that drop off are released.
"use strict";

(function () {
  const STORE = { read: "inspector.readToken", admin: "inspector.adminToken" };
  const POLL_MS = 10000; // each poll reads up to 500 small result files on the daemon
  const table = document.querySelector("#disagreements tbody");
  const empty = document.getElementById("disagreements-empty");
  if (!table || !empty) return;
  const rows = new Map(); // frame id -> its row
  let asking = null;

  function token() {
    // The admin token reads too; the read token when one was given.
    return sessionStorage.getItem(STORE.read) || sessionStorage.getItem(STORE.admin);
  }

  function get(path) {
    const headers = new Headers();
    const t = token();
    if (t) headers.set("Authorization", "Bearer " + t);
    return fetch(path, { headers: headers, cache: "no-store", credentials: "omit", redirect: "error" });
  }

  // The read token, asked for in the page's own panel (base.html), once however many polls
  // were refused meanwhile; resolves to whether one was given.
  function askToken() {
    if (asking) return asking;
    const panel = document.getElementById("token-panel");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const cancel = document.getElementById("token-cancel");
    if (!panel || !form || !input || !cancel) return Promise.resolve(false);
    document.getElementById("token-label").textContent =
      "Read token (http.read_token), needed to see results";
    input.value = "";
    panel.hidden = false;
    input.focus();
    asking = new Promise(function (resolve) {
      function finish(given) {
        form.removeEventListener("submit", submitted);
        cancel.removeEventListener("click", cancelled);
        panel.hidden = true;
        asking = null;
        resolve(given);
      }
      function submitted(event) {
        event.preventDefault();
        const value = input.value.trim();
        input.value = "";
        if (value) sessionStorage.setItem(STORE.read, value);
        finish(Boolean(value));
      }
      function cancelled() {
        finish(false);
      }
      form.addEventListener("submit", submitted);
      cancel.addEventListener("click", cancelled);
    });
    return asking;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  // One model's verdict: its name, then its score and verdict, coloured by the verdict.
  function verdict(row, role, model, score, anomalous) {
    const td = cell(row, "", "verdict " + (anomalous ? "anomalous" : "good"));
    td.dataset.role = role;
    const name = document.createElement("span");
    name.className = "model";
    name.textContent = model;
    const judged = document.createElement("strong");
    judged.textContent = anomalous ? "anomalous" : "good";
    const figure = document.createElement("span");
    figure.className = "score";
    figure.textContent = "score " + Number(score).toFixed(3);
    td.append(name, judged, figure);
  }

  function picture(row, view, frameId) {
    const img = document.createElement("img");
    img.className = "picture";
    img.dataset.view = view;
    img.alt = (view === "overlay" ? "served overlay of " : "frame ") + frameId;
    cell(row, "", "picture").appendChild(img);
    load(img, view, frameId);
  }

  async function load(img, view, frameId) {
    const id = encodeURIComponent(frameId).replace(/\./g, "%2E");
    const response = await get("/v1/results/" + id + "/image?view=" + view);
    if (!response.ok) {
      img.alt = view + " not available";
      return;
    }
    img.dataset.blob = URL.createObjectURL(await response.blob());
    img.src = img.dataset.blob;
  }

  function newRow(item) {
    const row = document.createElement("tr");
    row.dataset.frameId = item.frame_id;
    row.dataset.camera = item.camera_id;
    picture(row, "frame", item.frame_id);
    if (item.served_anomalous) {
      picture(row, "overlay", item.frame_id);
    } else {
      // The served model brings back a map only for the frames it flags: a frame it passed
      // has no overlay to ask for.
      cell(row, "no overlay: the served model passed it (maps are kept for flagged frames)", "no-picture");
    }
    verdict(row, "served", item.served_model, item.served_score, item.served_anomalous);
    verdict(row, "shadow", item.shadow_model, item.shadow_score, item.shadow_anomalous);
    const where = cell(row, "", "where");
    const link = document.createElement("a");
    link.href = "/frame?id=" + encodeURIComponent(item.frame_id);
    link.textContent = item.frame_id;
    const camera = document.createElement("span");
    camera.className = "camera";
    camera.textContent = item.camera_id;
    where.append(link, camera);
    cell(row, "", "label");
    return row;
  }

  function release(row) {
    row.querySelectorAll("img[data-blob]").forEach(function (img) {
      URL.revokeObjectURL(img.dataset.blob);
    });
  }

  async function refresh() {
    let response = await get("/v1/console/disagreements?limit=24");
    if (response.status === 401 && (await askToken())) {
      response = await get("/v1/console/disagreements?limit=24");
    }
    if (response.status === 401) {
      empty.hidden = false;
      empty.textContent = "The daemon needs the read token (http.read_token) to show results.";
      return;
    }
    if (!response.ok) throw new Error(String(response.status));
    const items = await response.json();
    const shown = [];
    const listed = new Set();
    for (const item of items) {
      listed.add(item.frame_id);
      const row = rows.get(item.frame_id) || newRow(item);
      rows.set(item.frame_id, row);
      row.querySelector("td.label").textContent = item.label || "unlabelled";
      shown.push(row);
    }
    for (const [frameId, row] of rows) {
      if (!listed.has(frameId)) {
        release(row);
        rows.delete(frameId);
      }
    }
    table.replaceChildren(...shown); // moves kept rows: their pictures stay loaded
    empty.hidden = items.length > 0;
    empty.textContent = "No disagreements among the retained frames.";
  }

  async function tick() {
    if (!document.hidden) {
      try {
        await refresh();
      } catch (error) {
        empty.hidden = false;
        empty.textContent = "The daemon did not answer; trying again.";
      }
    }
    setTimeout(tick, POLL_MS);
  }
  tick();
})();
