// The console's disagreements page: retained frames where a camera's shadow model judged
// otherwise than the served one. Same rules as console.js: values go in as text only, tokens
// stay in this tab's sessionStorage and travel only as an Authorization header.
"use strict";

(function () {
  const STORE = { read: "inspector.readToken", admin: "inspector.adminToken" };
  const POLL_MS = 10000; // each poll reads up to 500 small result files on the daemon
  const table = document.querySelector("#disagreements tbody");
  const empty = document.getElementById("disagreements-empty");
  if (!table || !empty) return;

  function headers() {
    const h = new Headers();
    // The admin token reads too; the read token when one was given.
    const token = sessionStorage.getItem(STORE.read) || sessionStorage.getItem(STORE.admin);
    if (token) h.set("Authorization", "Bearer " + token);
    return h;
  }

  function get(path) {
    return fetch(path, { headers: headers(), cache: "no-store", credentials: "omit", redirect: "error" });
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function verdict(model, score, anomalous) {
    return model + ": " + Number(score).toFixed(3) + " " + (anomalous ? "anomalous" : "good");
  }

  async function overlay(img, frameId) {
    const id = encodeURIComponent(frameId).replace(/\./g, "%2E");
    const response = await get("/v1/results/" + id + "/image?view=overlay");
    if (!response.ok) {
      img.alt = "overlay not available";
      return;
    }
    img.dataset.blob = URL.createObjectURL(await response.blob());
    img.src = img.dataset.blob;
  }

  async function refresh() {
    const response = await get("/v1/console/disagreements?limit=24");
    if (response.status === 401) {
      empty.hidden = false;
      empty.textContent = "The daemon needs the read token: give it on the Overview page.";
      return;
    }
    if (!response.ok) throw new Error(String(response.status));
    const items = await response.json();
    table.querySelectorAll("img[data-blob]").forEach(function (img) {
      URL.revokeObjectURL(img.dataset.blob);
    });
    table.replaceChildren();
    empty.hidden = items.length > 0;
    empty.textContent = "No disagreements among the retained frames.";
    for (const item of items) {
      const row = document.createElement("tr");
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "served overlay of " + item.frame_id;
      cell(row, "").appendChild(img);
      cell(row, item.camera_id);
      cell(row, verdict(item.served_model, item.served_score, item.served_anomalous));
      cell(row, verdict(item.shadow_model, item.shadow_score, item.shadow_anomalous));
      cell(row, item.label || "unlabelled");
      const link = document.createElement("a");
      link.href = "/frame?id=" + encodeURIComponent(item.frame_id);
      link.textContent = item.frame_id;
      cell(row, "").appendChild(link);
      table.appendChild(row);
      overlay(img, item.frame_id);
    }
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
