// RadFM rating: save each score as soon as it is clicked, and drive the slice viewers.
// Plain JavaScript, no libraries; the page also works without it (the form posts all scores).
"use strict";

(function () {
  const caseEl = document.getElementById("case");
  if (!caseEl) return;
  const number = caseEl.dataset.number;

  // --- scores: one POST per click, committed by the server before it answers ---
  document.querySelectorAll("fieldset.candidate").forEach(function (fieldset) {
    const slot = Number(fieldset.dataset.slot);
    const status = fieldset.querySelector(".saved");
    fieldset.querySelectorAll("input[type=radio]").forEach(function (radio) {
      radio.addEventListener("change", function () {
        status.textContent = "saving…";
        status.classList.remove("failed");
        fetch("/api/case/" + number + "/score", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          credentials: "same-origin",
          body: JSON.stringify({ slot: slot, score: Number(radio.value) }),
        })
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            status.textContent = "saved";
            status.dataset.savedScore = radio.value;
          })
          .catch(function (error) {
            status.textContent = "not saved (" + error.message + ") - use the Save button";
            status.classList.add("failed");
          });
      });
    });
  });

  // --- slice viewers: the server renders each slice; we only swap the image URL ---
  document.querySelectorAll("figure.viewer").forEach(function (figure) {
    const img = figure.querySelector("img.slice");
    const controls = figure.querySelector(".controls");
    if (!img || !controls) return;
    const slider = controls.querySelector("input.depth");
    const windowSelect = controls.querySelector("select.window");
    const sliceNo = controls.querySelector("output.slice-no");
    let pending = false;
    const problem = document.createElement("p");
    problem.className = "error";
    figure.appendChild(problem);
    img.addEventListener("error", function () {
      // the server answers 422 with the reason when a scan cannot be read
      fetch(img.src, { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (body) { problem.textContent = "Cannot display this scan: " + body.detail; })
        .catch(function () { problem.textContent = "Cannot display this scan."; });
    });
    img.addEventListener("load", function () { problem.textContent = ""; });

    function show() {
      // coalesce slider events into at most one request per animation frame
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        img.src = figure.dataset.src + "?slice=" + slider.value + "&window=" + encodeURIComponent(windowSelect.value);
        sliceNo.textContent = (Number(slider.value) + 1) + " / " + (Number(slider.max) + 1);
      });
    }

    fetch(figure.dataset.info, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (info) {
        if (!info) return;
        if (info.rgb) return; // colour picture: nothing to window or scroll
        slider.max = String(info.depth - 1);
        slider.value = String(Math.floor(info.depth / 2));
        controls.querySelector(".slice-control").hidden = info.depth < 2; // a 2D image has one slice
        controls.hidden = false;
        figure.dataset.ready = "1";
        sliceNo.textContent = (Number(slider.value) + 1) + " / " + info.depth;
      });
    slider.addEventListener("input", show);
    windowSelect.addEventListener("change", show);
  });
})();
