// crmsync console: the live view. A page marked `data-watch` polls its JSON
// and, for a running sync, shows its progress; when a sync's state or last
// run changes, the page reloads so the server renders the new facts.
"use strict";
(function () {
  const watched = document.querySelector("[data-watch]");
  if (!watched) return;
  const url = watched.getAttribute("data-watch");
  const progress = document.getElementById("progress");
  const fingerprint = (syncs) =>
    syncs.map((s) => `${s.name}|${s.state}|${s.last_run ? s.last_run.id + s.last_run.status : ""}`).join(";");
  let first = null;
  async function look() {
    try {
      const answer = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!answer.ok) return;
      const data = await answer.json();
      const syncs = Array.isArray(data) ? data : [data];
      const now = fingerprint(syncs);
      // A sync's page says what it rendered: a run that started (or ended)
      // between the render and the first look must reload it too, or a
      // "Run now" that is quick would never show.
      const rendered = watched.dataset.lastRun !== undefined && !Array.isArray(data) &&
        (data.state !== watched.dataset.state ||
          String(data.last_run ? data.last_run.id : 0) !== watched.dataset.lastRun);
      if (first === null) first = now;
      if (rendered || now !== first) { location.reload(); return; }
      if (progress && !Array.isArray(data)) {
        const p = data.progress;
        if (p) {
          progress.hidden = false;
          progress.textContent = `Running since ${p.started_at}: ${p.pages} pages, ${p.seen} records (` +
            `${p.created} created, ${p.updated} updated, ${p.failed} failed)`;
        } else {
          progress.hidden = true;
        }
      }
    } catch (e) {
      // The runner may be restarting; look again next time.
    }
  }
  look();
  setInterval(look, 1000);
})();
