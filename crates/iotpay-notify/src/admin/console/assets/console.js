// Live counts: refresh the numbers of every [data-live-counts] list every 5 s. Pages work
// without this script; it only keeps the counts current.
(function () {
  var list = document.querySelector("[data-live-counts]");
  if (!list || !window.fetch) return;
  function refresh() {
    fetch("/counts", { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (counts) {
        if (!counts) return;
        Object.keys(counts).forEach(function (status) {
          var el = list.querySelector('[data-count="' + status + '"]');
          if (el && el.textContent !== String(counts[status])) el.textContent = counts[status];
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
})();
