// Outpost web console: live refresh and selection. No build step: served as it is.
// Every second the page asks its server for central's change counter; when it moves, the
// page's <main> is fetched again and replaced (selected hosts stay selected). Forms above
// <main> (the filter, the actions) are never replaced, so typing is never lost.
(function () {
  "use strict";
  var body = document.body;
  var generation = body.dataset.generation;
  var live = document.getElementById("live");

  function selected() {
    return document.querySelectorAll("input[name=host]:checked");
  }

  function updateSelection() {
    var n = selected().length;
    var count = document.getElementById("selected");
    if (count) count.textContent = String(n);
    var buttons = document.querySelectorAll(".needs-selection");
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = n === 0;
  }

  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) return;
      return r.text().then(function (html) {
        var keep = {};
        var checked = selected();
        for (var i = 0; i < checked.length; i++) keep[checked[i].value] = true;
        document.getElementById("main").innerHTML = html;
        var boxes = document.querySelectorAll("input[name=host]");
        for (var j = 0; j < boxes.length; j++) if (keep[boxes[j].value]) boxes[j].checked = true;
        body.dataset.refreshed = String(Date.now());
        updateSelection();
      });
    });
  }

  function poll() {
    fetch("/api/generation", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (g) {
        if (live) live.textContent = "live";
        g = g.trim();
        if (g !== generation && body.dataset.live === "1") {
          generation = g;
          body.dataset.generation = g;
          return refresh();
        }
      })
      .catch(function () { if (live) live.textContent = "offline"; })
      .then(function () { window.setTimeout(poll, 1000); });
  }

  document.addEventListener("change", function (e) {
    if (e.target && e.target.id === "all") {
      var boxes = document.querySelectorAll("input[name=host]");
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = e.target.checked;
    }
    updateSelection();
  });
  updateSelection();
  poll();
})();
