// The clip player (served by rearview-console at /assets/player.js; see web/viewer.rs).
//
// Reads the clip's timeline once (/clips/ID/timeline?view=V), then draws the frame of each
// monitor that was on screen at the current time onto a canvas of the monitor's own size, so
// the canvas holds the decoded pixels exactly (the page scales it for display only). Frames
// of kind "S" (same as the one before) are drawn from the frame they repeat. The current state
// is mirrored on #player's data attributes (data-ready, data-time, data-shown) for people's
// tools and for the tests.
(() => {
  "use strict";
  const root = document.getElementById("player");
  if (!root) return;
  const clip = root.dataset.clip;
  const viewQ = "?view=" + encodeURIComponent(root.dataset.view);
  const $ = (id) => document.getElementById(id);
  const screens = $("screens"), seek = $("seek"), entriesEl = $("entries");
  const playBtn = $("play"), speedSel = $("speed"), skipBox = $("skip"), monSel = $("monitor");
  const SPEEDS = [1, 2, 4, 8, 16];
  const IDLE_US = 2000000; // skip inactivity: quiet stretches longer than this are jumped
  let tl = null, t0 = 0, t1 = 0, t = 0, playing = false, last = 0;
  const perMonitor = new Map(); // monitor id -> [{t, src: {s, i}}] in time order
  const drawn = new Map(); // monitor id -> "s/i" drawn
  const images = new Map(); // url -> Promise<HTMLImageElement>
  let activity = []; // times (µs) where something changes: frames that differ, entries

  const utc = (us) => new Date(us / 1000).toISOString().replace("T", " ").slice(0, 23) + " UTC";
  const frameUrl = (src) => `/clips/${encodeURIComponent(clip)}/frames/${src.s}/${src.i}${viewQ}`;

  function image(src) {
    const url = frameUrl(src);
    if (!images.has(url)) {
      if (images.size > 300) images.delete(images.keys().next().value);
      images.set(url, new Promise((ok, fail) => {
        const img = new Image();
        img.onload = () => ok(img);
        img.onerror = () => { images.delete(url); fail(new Error("frame " + url)); };
        img.src = url;
      }));
    }
    return images.get(url);
  }

  // The last index in `list` (sorted by .t) whose t <= at, or -1.
  function at(list, when) {
    let lo = 0, hi = list.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].t <= when) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  }

  function visible(id) {
    return monSel.value === "all" || String(id) === monSel.value;
  }

  function show(when) {
    t = Math.max(t0, Math.min(t1, when));
    const shown = {};
    const draws = [];
    for (const [id, list] of perMonitor) {
      const fig = $("screen-" + id);
      fig.hidden = !visible(id);
      let k = at(list, t);
      if (k < 0) k = 0; // before a monitor's first frame: its first picture
      const src = list[k].src;
      shown[id] = { s: src.s, i: src.i, t: list[k].t };
      const key = src.s + "/" + src.i;
      if (drawn.get(id) !== key) {
        draws.push(image(src).then((img) => {
          if (shown[id] !== root._shown?.[id]) return; // a later show() won
          const canvas = fig.querySelector("canvas");
          canvas.getContext("2d").drawImage(img, 0, 0);
          drawn.set(id, key);
        }));
      }
      // Fetch ahead while playing.
      for (let n = 1; n <= 3 && k + n < list.length; n++) image(list[k + n].src).catch(() => {});
    }
    root._shown = shown;
    Promise.allSettled(draws).then(() => {
      if (root._shown !== shown) return;
      root.dataset.shown = JSON.stringify(shown);
      root.dataset.time = String(t);
      root.dataset.ready = "1";
    });
    $("clock").textContent = utc(t);
    const pct = t1 > t0 ? ((t - t0) / (t1 - t0)) * 100 : 0;
    seek.style.setProperty("--at", pct + "%");
    seek.setAttribute("aria-valuenow", pct.toFixed(1));
    seek.setAttribute("aria-valuetext", utc(t));
    markCurrentEntry();
  }

  function markCurrentEntry() {
    let current = null;
    for (const li of entriesEl.children) {
      if (Number(li.dataset.t) <= t) current = li;
      li.classList.remove("current");
    }
    if (current) current.classList.add("current");
  }

  function frameTimes() {
    const ts = [];
    for (const [id, list] of perMonitor) if (visible(id)) for (const f of list) ts.push(f.t);
    return ts.sort((a, b) => a - b);
  }

  function step(dir) {
    pause();
    const ts = frameTimes();
    const next = dir > 0 ? ts.find((x) => x > t) : [...ts].reverse().find((x) => x < t);
    if (next !== undefined) show(next);
  }

  function tickPlay(now) {
    if (!playing) return;
    const speed = Number(speedSel.value) || 1;
    let next = t + (now - last) * 1000 * speed;
    last = now;
    if (skipBox.checked) {
      const k = activity.findIndex((x) => x > t);
      if (k >= 0 && activity[k] - t > IDLE_US && next < activity[k]) next = activity[k];
    }
    if (next >= t1) { show(t1); pause(); return; }
    show(next);
    requestAnimationFrame(tickPlay);
  }

  function play() {
    if (playing) return;
    if (t >= t1) show(t0);
    playing = true;
    playBtn.textContent = "Pause";
    playBtn.setAttribute("aria-pressed", "true");
    last = performance.now();
    requestAnimationFrame(tickPlay);
  }

  function pause() {
    playing = false;
    playBtn.textContent = "Play";
    playBtn.setAttribute("aria-pressed", "false");
  }

  function marker(cls, startUs, endUs, title) {
    const m = document.createElement("span");
    m.className = "mark " + cls;
    const span = t1 - t0 || 1;
    // Outside the window (a trigger's activity before the clip began): pinned to the edge.
    const pct = (us) => Math.max(0, Math.min(100, ((us - t0) / span) * 100));
    m.style.left = pct(startUs) + "%";
    if (endUs > startUs) m.style.width = Math.max(0.3, pct(endUs) - pct(startUs)) + "%";
    m.title = title;
    seek.appendChild(m);
  }

  function init(data) {
    tl = data;
    t0 = data.start_ms * 1000;
    t1 = data.end_ms * 1000;
    for (const m of data.monitors) {
      const fig = document.createElement("figure");
      fig.id = "screen-" + m.id;
      const canvas = document.createElement("canvas");
      canvas.width = m.width;
      canvas.height = m.height;
      canvas.dataset.monitor = m.id;
      canvas.setAttribute("aria-label", `Screen ${m.name} (${m.width}×${m.height})`);
      const cap = document.createElement("figcaption");
      cap.textContent = `${m.name} · ${m.width}×${m.height}`;
      fig.append(canvas, cap);
      screens.appendChild(fig);
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.name;
      monSel.appendChild(opt);
      perMonitor.set(m.id, []);
    }
    const lastSrc = new Map();
    for (const f of data.frames) {
      const list = perMonitor.get(f.m);
      if (!list) continue;
      const src = f.k === "S" && lastSrc.has(f.m) ? lastSrc.get(f.m) : { s: f.s, i: f.i };
      if (f.k !== "S") activity.push(f.t);
      lastSrc.set(f.m, src);
      list.push({ t: f.t, src });
    }
    for (const e of data.transcript) activity.push(e.t);
    activity.sort((a, b) => a - b);

    // Seek bar: gaps (with their reason), the trigger, window changes, key bursts, clicks.
    for (const g of data.gaps) marker("gap", g.start_ms * 1000, g.end_ms * 1000, "gap: " + g.reason);
    if (data.trigger_ms) marker("trigger", data.trigger_ms * 1000, 0, "trigger: " + (data.trigger_reason || ""));
    for (const e of data.transcript) marker(e.kind, e.t, e.end, `${e.kind}: ${e.text}`);

    const gapsEl = $("gaps");
    if (data.gaps.length === 0) gapsEl.innerHTML = "<li>none</li>";
    for (const g of data.gaps) {
      const li = document.createElement("li");
      li.textContent = `${utc(g.start_ms * 1000)} – ${utc(g.end_ms * 1000)}: ${g.reason}`;
      gapsEl.appendChild(li);
    }
    for (const e of data.transcript) {
      const li = document.createElement("li");
      li.dataset.t = e.t;
      li.className = "entry " + e.kind;
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.t = e.t;
      const time = document.createElement("time");
      time.textContent = utc(e.t).slice(11, 19);
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = e.text;
      b.append(time, " ", text);
      b.title = `${e.app} — ${e.title}`;
      b.addEventListener("click", () => { pause(); show(e.t); });
      li.appendChild(b);
      entriesEl.appendChild(li);
    }
    const badge = $("integrity");
    badge.textContent = `Integrity: ${data.integrity.state} — ${data.integrity.checks.join("; ")}`;
    badge.dataset.state = data.integrity.state;
    if (data.frames.length === 0) {
      root.dataset.ready = "1";
      $("clock").textContent = "no frames held for this clip";
      return;
    }
    show(t0);
  }

  playBtn.addEventListener("click", () => (playing ? pause() : play()));
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  monSel.addEventListener("change", () => show(t));
  seek.addEventListener("click", (ev) => {
    const r = seek.getBoundingClientRect();
    show(t0 + ((ev.clientX - r.left) / r.width) * (t1 - t0));
  });
  $("search").addEventListener("input", (ev) => {
    const words = ev.target.value.toLowerCase().trim();
    for (const li of entriesEl.children) {
      li.hidden = words !== "" && !li.textContent.toLowerCase().includes(words);
    }
  });
  document.addEventListener("keydown", (ev) => {
    const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
    if (typing && ev.key !== "Escape") return;
    const i = SPEEDS.indexOf(Number(speedSel.value));
    switch (ev.key) {
      case " ": ev.preventDefault(); playing ? pause() : play(); break;
      case "ArrowRight": ev.preventDefault(); step(1); break;
      case "ArrowLeft": ev.preventDefault(); step(-1); break;
      case "]": speedSel.value = String(SPEEDS[Math.min(SPEEDS.length - 1, i + 1)]); break;
      case "[": speedSel.value = String(SPEEDS[Math.max(0, i - 1)]); break;
      case "/": ev.preventDefault(); $("search").focus(); break;
      case "Escape": ev.target.blur?.(); break;
    }
  });

  fetch(`/clips/${encodeURIComponent(clip)}/timeline${viewQ}`, { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : r.text().then((m) => Promise.reject(new Error(m)))))
    .then(init)
    .catch((e) => {
      $("integrity").textContent = "Could not open the clip: " + e.message;
      root.dataset.error = e.message;
    });
})();
