// RadFM chat: upload scans, look at them (original and what the model receives), ask questions
// with <image> placeholders, read answers as they are generated, export them (DICOM SR, JSON).
// Plain JavaScript, no libraries; everything is served by `radfm serve` itself.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    scans: [],        // {id, number, info, sent} in upload order
    history: [],      // {role, text, scans: [ids]} sent back with every question (multi-turn)
    viewing: null,    // the scan in the viewer
    controller: null, // AbortController of the answer being streamed
    info: null,
  };

  // ---- banner and settings -------------------------------------------------------------
  fetch("/chat/api/info").then((r) => r.json()).then((info) => {
    state.info = info;
    $("model-name").textContent = info.model.name;
    $("model-detail").textContent = "(version " + info.model.version + ", weights sha256 " +
      info.model.weights_sha256.slice(0, 12) + "…, up to " + info.max_images + " scans per question)";
    $("max-tokens").max = String(info.max_new_tokens);
    $("max-tokens").value = String(Math.min(64, info.default_max_new_tokens));
    const select = $("window");
    Object.keys(info.window_presets).forEach((name) => {
      const option = document.createElement("option");
      const [low, high] = info.window_presets[name];
      option.value = name;
      option.textContent = name + " (" + low + ", " + high + " HU)";
      select.appendChild(option);
    });
    document.body.dataset.ready = "1";
  });

  // ---- uploads: picker, folder picker, drag and drop -------------------------------------
  function upload(files) {
    if (!files.length) return;
    const form = new FormData();
    files.forEach((file) => form.append("files", file, file.webkitRelativePath || file.name));
    const status = $("upload-status");
    status.textContent = "uploading and preprocessing " + files.length + " file(s)…";
    status.classList.remove("error");
    fetch("/chat/api/scans", { method: "POST", body: form })
      .then((response) => response.json().then((body) => ({ ok: response.ok, body: body })))
      .then(({ ok, body }) => {
        if (!ok) throw new Error(body.error || "upload failed");
        body.scans.forEach(addScan);
        status.textContent = body.scans.length + " scan(s) added";
      })
      .catch((error) => { status.textContent = error.message; status.classList.add("error"); });
  }

  $("file-input").addEventListener("change", (event) => { upload(Array.from(event.target.files)); event.target.value = ""; });
  $("folder-input").addEventListener("change", (event) => { upload(Array.from(event.target.files)); event.target.value = ""; });

  function filesOfEntry(entry) {
    // a dropped folder: read it recursively (DICOM series)
    if (entry.isFile) return new Promise((resolve) => entry.file((file) => resolve([file]), () => resolve([])));
    const reader = entry.createReader();
    return new Promise((resolve) => {
      const all = [];
      (function next() {
        reader.readEntries((entries) => {
          if (!entries.length) {
            Promise.all(all).then((lists) => resolve([].concat.apply([], lists)));
            return;
          }
          entries.forEach((child) => all.push(filesOfEntry(child)));
          next();
        }, () => resolve([]));
      })();
    });
  }

  const drop = $("dropzone");
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const items = Array.from(event.dataTransfer.items || []);
    const entries = items.map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) {
      Promise.all(entries.map(filesOfEntry)).then((lists) => upload([].concat.apply([], lists)));
    } else {
      upload(Array.from(event.dataTransfer.files));
    }
  });

  // ---- thumbnails ---------------------------------------------------------------------
  function sliceUrl(scan, view, index) {
    const window_ = view === "original" ? $("window").value : "auto";
    return "/chat/api/scans/" + scan.id + "/slice.png?view=" + view + "&slice=" + index + "&window=" + encodeURIComponent(window_);
  }

  function shapeText(info) {
    return info.original_shape.join("×") + (info.rgb ? " RGB" : "") + " → model " + info.model_shape.join("×");
  }

  function addScan(info) {
    const scan = { id: info.id, number: state.scans.length + 1, info: info, sent: false };
    state.scans.push(scan);
    const item = document.createElement("li");
    item.className = "thumb";
    item.dataset.id = scan.id;
    item.title = "click to insert <image #" + scan.number + "> into the question";
    const img = document.createElement("img");
    img.alt = info.name;
    img.src = sliceUrl(scan, "original", Math.floor(info.original_depth / 2)).replace(/window=[^&]*/, "window=auto");
    const caption = document.createElement("div");
    caption.innerHTML = "";
    const number = document.createElement("span");
    number.className = "number";
    number.textContent = "#" + scan.number + " ";
    const modality = document.createElement("span");
    modality.className = "modality";
    modality.textContent = info.modality;
    const shape = document.createElement("div");
    shape.className = "shape muted";
    shape.textContent = shapeText(info);
    const name = document.createElement("div");
    name.className = "muted";
    name.textContent = info.name;
    caption.append(number, modality, shape, name);
    const view = document.createElement("button");
    view.type = "button";
    view.className = "link view";
    view.textContent = "view";
    view.addEventListener("click", (event) => { event.stopPropagation(); showScan(scan); });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "remove this scan";
    remove.addEventListener("click", (event) => {
      event.stopPropagation();
      fetch("/chat/api/scans/" + scan.id, { method: "DELETE" });
      scan.removed = true;
      item.remove();
      if (state.viewing === scan) $("viewer").hidden = true;
    });
    item.append(img, caption, view, remove);
    item.addEventListener("click", () => { insertPlaceholder(scan); showScan(scan); });
    $("thumbs").appendChild(item);
    showScan(scan);
  }

  function insertPlaceholder(scan) {
    const box = $("prompt");
    const marker = "<image #" + scan.number + ">";
    const start = box.selectionStart ?? box.value.length;
    const end = box.selectionEnd ?? box.value.length;
    const before = box.value.slice(0, start);
    const spaced = (before && !/\s$/.test(before) ? " " : "") + marker + " ";
    box.value = before + spaced + box.value.slice(end);
    box.focus();
    box.selectionStart = box.selectionEnd = start + spaced.length;
  }

  // ---- slice viewer: original beside the model's input ----------------------------------
  let pending = false;
  function render() {
    if (pending || !state.viewing) return;
    pending = true;
    window.requestAnimationFrame(() => {
      pending = false;
      const scan = state.viewing;
      const k = Number($("slice").value);
      const depth = scan.info.original_depth;
      const modelDepth = scan.info.model_depth;
      const m = depth > 1 ? Math.round(k * (modelDepth - 1) / (depth - 1)) : Math.floor(modelDepth / 2);
      $("view-original").src = sliceUrl(scan, "original", k);
      $("view-model").src = sliceUrl(scan, "model", m);
      $("slice-no").textContent = (k + 1) + " / " + depth;
      $("model-caption").textContent = "What the model receives: slice " + (m + 1) + " / " + modelDepth +
        " of " + scan.info.model_shape.join("×");
      $("viewer").dataset.slice = String(k);
    });
  }

  function showScan(scan) {
    state.viewing = scan;
    document.querySelectorAll(".thumb").forEach((t) => t.classList.toggle("selected", t.dataset.id === scan.id));
    const slider = $("slice");
    slider.max = String(scan.info.original_depth - 1);
    slider.value = String(Math.floor(scan.info.original_depth / 2));
    slider.closest(".slice-control").hidden = scan.info.original_depth < 2;
    $("viewer-title").textContent = "#" + scan.number + " " + scan.info.modality + " · " + shapeText(scan.info);
    $("viewer").hidden = false;
    $("viewer").dataset.scan = scan.id;
    render();
  }

  $("slice").addEventListener("input", render);
  $("window").addEventListener("change", render);
  document.querySelectorAll("#viewer img.slice").forEach((img) => img.addEventListener("wheel", (event) => {
    // scroll through the volume with the mouse wheel, as in a PACS viewer
    if (!state.viewing || state.viewing.info.original_depth < 2) return;
    event.preventDefault();
    const slider = $("slice");
    slider.value = String(Math.min(Number(slider.max), Math.max(0, Number(slider.value) + (event.deltaY > 0 ? 1 : -1))));
    render();
  }, { passive: false }));

  // ---- asking --------------------------------------------------------------------------
  function placeScans(raw) {
    // "<image #N>" names a scan; a plain "<image>" takes the next scan not yet in the conversation;
    // a question without placeholders gets every new scan in front (the model's default placement).
    const byNumber = new Map(state.scans.filter((s) => !s.removed).map((s) => [s.number, s]));
    const named = Array.from(raw.matchAll(/<image #(\d+)>/g)).map((m) => Number(m[1]));
    const unknown = named.filter((n) => !byNumber.has(n));
    if (unknown.length) throw new Error("no scan #" + unknown.join(", #") + " (removed or never added)");
    const fresh = state.scans.filter((s) => !s.removed && !s.sent && !named.includes(s.number));
    const ids = [];
    let text = raw.replace(/<image(?: #(\d+))?>/g, (match, n) => {
      if (n) { ids.push(byNumber.get(Number(n))); return "<image>"; }
      const next = fresh.shift();
      if (!next) throw new Error("more <image> placeholders than new scans; upload a scan or click a thumbnail");
      ids.push(next);
      return "<image>";
    });
    if (!ids.length && fresh.length) {
      text = "<image>".repeat(fresh.length) + text;
      ids.push.apply(ids, fresh);
    }
    return { text: text, scans: ids };
  }

  function addMessage(role, text) {
    const box = document.createElement("div");
    box.className = "msg " + role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "user" ? "You" : (state.info ? state.info.model.name : "the model");
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    box.append(who, body);
    $("conversation").appendChild(box);
    return box;
  }

  function download(blob, filename) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function addExports(box, record) {
    const note = document.createElement("div");
    note.className = "unverified";
    note.textContent = "UNVERIFIED machine-generated text · prompt sent: " + record.prompt;
    const exports = document.createElement("div");
    exports.className = "exports";
    const sr = document.createElement("button");
    sr.type = "button";
    sr.className = "secondary export-sr";
    sr.textContent = "Export DICOM SR";
    sr.addEventListener("click", () => {
      box.dataset.exported = "";
      fetch("/chat/api/export/sr", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(record) })
        .then((response) => {
          if (!response.ok) return response.json().then((b) => { throw new Error(b.error || "export failed"); });
          const disposition = response.headers.get("Content-Disposition") || "";
          const name = (disposition.match(/filename="([^"]+)"/) || [null, "radfm_answer_sr.dcm"])[1];
          return response.blob().then((blob) => { download(blob, name); box.dataset.exported = name; });
        })
        .catch((error) => { note.textContent = "SR export failed: " + error.message; });
    });
    const json = document.createElement("button");
    json.type = "button";
    json.className = "secondary export-json";
    json.textContent = "Export JSON";
    json.addEventListener("click", () => {
      const scans = record.scans.map((id) => state.scans.find((s) => s.id === id)).filter(Boolean)
        .map((s) => ({ name: s.info.name, kind: s.info.kind, modality: s.info.modality, shape: s.info.original_shape,
                       model_shape: s.info.model_shape, series_uid: s.info.series_uid }));
      const out = Object.assign({}, record, { scans: scans, conversation: state.history.slice() });
      download(new Blob([JSON.stringify(out, null, 2)], { type: "application/json" }), "radfm_answer.json");
      box.dataset.exportedJson = "1";
    });
    exports.append(sr, json);
    box.append(note, exports);
  }

  function ask(event) {
    event.preventDefault();
    $("ask-error").textContent = "";
    const raw = $("prompt").value.trim();
    if (!raw) return;
    let turn;
    try { turn = placeScans(raw); } catch (error) { $("ask-error").textContent = error.message; return; }
    const message = { role: "user", text: turn.text, scans: turn.scans.map((s) => s.id) };
    const shown = addMessage("user", raw);
    const answerBox = addMessage("assistant", "");
    const answerText = answerBox.querySelector(".text");
    answerBox.dataset.chunks = "0";
    state.controller = new AbortController();
    $("send").disabled = true;
    $("stop").disabled = false;
    const request = {
      messages: state.history.concat([message]),
      max_new_tokens: Number($("max-tokens").value) || undefined,
    };

    function finished(answer, record) {
      turn.scans.forEach((s) => { s.sent = true; });
      state.history.push(message, { role: "assistant", text: answer.replace(/<image>/g, ""), scans: [] });
      $("prompt").value = "";
      if (record) addExports(answerBox, record);
      answerBox.dataset.done = "1";
    }

    fetch("/chat/api/answer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request), signal: state.controller.signal,
    }).then((response) => {
      if (!response.ok) return response.json().then((b) => { throw new Error(b.error || "HTTP " + response.status); });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      function pump() {
        return reader.read().then(({ done, value }) => {
          if (done) return;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const line = buffer.slice(0, cut).replace(/^data: /, "");
            buffer = buffer.slice(cut + 2);
            const data = JSON.parse(line);
            if (data.type === "text") {
              answerText.textContent += data.text;
              answerBox.dataset.chunks = String(Number(answerBox.dataset.chunks) + 1);
            } else if (data.type === "done") {
              answerText.textContent = data.answer;
              finished(data.answer, data);
            } else if (data.type === "error") {
              throw new Error(data.message);
            }
          }
          return pump();
        });
      }
      return pump();
    }).catch((error) => {
      if (error.name === "AbortError") {
        answerText.textContent += " [stopped]";
        finished(answerText.textContent.replace(/ \[stopped\]$/, ""), null);
      } else {
        shown.classList.add("failed");
        answerBox.remove();
        $("ask-error").textContent = error.message;
      }
    }).finally(() => {
      $("send").disabled = false;
      $("stop").disabled = true;
      state.controller = null;
    });
  }

  $("ask-form").addEventListener("submit", ask);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ask(event);
  });
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  $("new-chat").addEventListener("click", () => {
    state.history = [];
    state.scans.forEach((s) => { s.sent = false; });
    $("conversation").innerHTML = "";
  });
})();
