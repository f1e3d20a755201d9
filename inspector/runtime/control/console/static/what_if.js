// The overview's threshold what-if: pick a camera and slide a threshold; the table shows what it
// would flag, catch and miss over the camera's retained frames beside the current threshold
// (GET /v1/cameras/{id}/what-if). Nothing is applied. Same rules as console.js: values go in
// as text only; tokens stay in this tab's sessionStorage and travel only as a bearer header.
"use strict";

(function () {
  const STORE = { read: "inspector.readToken", admin: "inspector.adminToken" };
  const DEBOUNCE_MS = 150; // one request per pause of the slider, not one per pixel
  const form = document.getElementById("what-if");
  if (!form) return;
  const camera = document.getElementById("what-if-camera");
  const slider = document.getElementById("what-if-threshold");
  const shown = document.getElementById("what-if-value");
  const table = document.querySelector("#what-if-table tbody");
  const note = document.getElementById("what-if-note");
  let timer = null;
  let asked = 0; // answers to older requests are dropped

  function headers() {
    const h = new Headers();
    const token = sessionStorage.getItem(STORE.read) || sessionStorage.getItem(STORE.admin);
    if (token) h.set("Authorization", "Bearer " + token);
    return h;
  }

  function text(value, rate) {
    if (value === null || value === undefined) return "–";
    return rate ? (100 * value).toFixed(1) + " %" : String(value);
  }

  const ROWS = [
    ["image threshold", "image_threshold", false],
    ["flagged (retained)", "flagged", false],
    ["false alarms (labelled)", "false_alarms", false],
    ["false-alarm rate (of labelled)", "false_alarm_rate", true],
    ["catches (labelled defects)", "catches", false],
    ["misses (labelled defects)", "misses", false],
    ["catch rate (of labelled)", "catch_rate", true],
    ["flagged without a label", "unlabelled_flagged", false],
    ["estimated flag rate (line)", "estimated_flag_rate", true],
  ];

  function render(answer) {
    const rows = ROWS.map(function (spec) {
      const tr = document.createElement("tr");
      [spec[0], text(answer.current[spec[1]], spec[2]), text(answer.proposed[spec[1]], spec[2])]
        .forEach(function (value, i) {
          const cell = document.createElement(i ? "td" : "th");
          cell.textContent = value;
          tr.appendChild(cell);
        });
      return tr;
    });
    table.replaceChildren.apply(table, rows);
    note.textContent = answer.frames + " retained frames; " + answer.labelled_false_alarms +
      " labelled false alarms, " + answer.labelled_defects + " labelled defects.";
  }

  function ask() {
    const id = camera.value;
    shown.textContent = Number(slider.value).toFixed(2);
    if (!id) return;
    const mine = ++asked;
    const path = "/v1/cameras/" + encodeURIComponent(id) + "/what-if?image_threshold=" +
      encodeURIComponent(slider.value);
    fetch(path, { headers: headers(), cache: "no-store", credentials: "omit", redirect: "error" })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (answer) {
        if (mine !== asked) return;
        if (answer.ok) render(answer.body);
        else {
          table.replaceChildren();
          note.textContent = typeof answer.body.detail === "string" ? answer.body.detail : "No answer.";
        }
      })
      .catch(function () { if (mine === asked) note.textContent = "The daemon did not answer."; });
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(ask, DEBOUNCE_MS);
  }

  // The camera list follows the overview's tiles (console.js draws them from live data).
  function cameras() {
    const ids = Array.from(document.querySelectorAll("#tiles [data-camera]"))
      .map(function (tile) { return tile.dataset.camera; });
    const have = Array.from(camera.options).map(function (o) { return o.value; });
    if (ids.join("\n") === have.join("\n")) return;
    const keep = camera.value;
    camera.replaceChildren.apply(camera, ids.map(function (id) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id;
      return option;
    }));
    if (ids.indexOf(keep) >= 0) camera.value = keep;
    if (!keep && ids.length) later();
  }

  slider.addEventListener("input", later);
  camera.addEventListener("change", later);
  setInterval(cameras, 2000);
  cameras();
})();
