/* The cluster page redraws itself from /api/cluster every few seconds.
   No framework and no CDN; text is set with textContent, never as HTML.
   Without script, the page's <noscript> meta refresh reloads it instead. */
(function () {
  "use strict";
  var summary = document.getElementById("cluster-summary");
  var rows = document.getElementById("cluster-rows");
  if (!summary || !rows || !window.fetch) { return; }
  var api = summary.getAttribute("data-api");
  var every = 1000 * (parseFloat(summary.getAttribute("data-refresh")) || 2);

  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return m + " min " + (s % 60) + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function cell(tag, text, cls) {
    var el = document.createElement(tag);
    el.textContent = text;
    if (cls) { el.className = cls; }
    if (tag === "th") { el.setAttribute("scope", "row"); }
    return el;
  }

  function row(r, servedBy, details) {
    var tr = document.createElement("tr");
    tr.className = "replica " + (r.alive ? "alive" : "gone") + (r.name === servedBy ? " this" : "");
    tr.setAttribute("data-name", r.name);
    var name = cell("th", r.name);
    if (r.name === servedBy) {
      name.appendChild(document.createTextNode(" "));
      name.appendChild(cell("span", "served this page", "badge"));
    }
    tr.appendChild(name);
    tr.appendChild(cell("td", r.alive ? "alive" : "gone", "state"));
    // Process details come only to a client on the cluster's own host (or
    // with SHOP_CLUSTER_DETAILS=1), and then the table has their columns.
    if (!details) { return tr; }
    tr.appendChild(cell("td", String(r.workers), "num"));
    tr.appendChild(cell("td", r.uptime_seconds === null ? "–" : duration(r.uptime_seconds), "num"));
    tr.appendChild(cell("td", r.requests_total === null ? "–" : String(r.requests_total), "num"));
    tr.appendChild(cell("td", String(r.requests_last_minute), "num"));
    tr.appendChild(cell("td", duration(r.seconds_since_seen) + " ago", "num"));
    return tr;
  }

  function decisionRow(d, now) {
    var tr = document.createElement("tr");
    tr.className = "decision " + d.action;
    tr.setAttribute("data-action", d.action);
    tr.appendChild(cell("th", d.summary));
    tr.appendChild(cell("td", d.reason || ""));
    tr.appendChild(cell("td", typeof d.took === "number" ? d.took.toFixed(1) + " s" : "–", "num"));
    tr.appendChild(cell("td", duration(now - d.at) + " ago", "num"));
    return tr;
  }

  function drawAutoscale(scaling, now) {
    var summaryEl = document.getElementById("autoscale-summary");
    var decisions = document.getElementById("autoscale-rows");
    if (!scaling || !summaryEl || !decisions) { return; }
    if (scaling.reading) {
      summaryEl.textContent = "On: " + scaling.reading.summary + ".";
      summaryEl.setAttribute("data-on", "yes");
    } else {
      summaryEl.replaceChildren("Off. ", cell("code", "shop-cluster autoscale 1:4"),
        " turns it on: replicas then follow the requests in flight.");
      summaryEl.setAttribute("data-on", "no");
    }
    var fresh = document.createDocumentFragment();
    scaling.decisions.forEach(function (d) { fresh.appendChild(decisionRow(d, now)); });
    if (!scaling.decisions.length) {
      var empty = document.createElement("tr");
      var td = cell("td", "No decision yet.");
      td.setAttribute("colspan", "4");
      empty.appendChild(td);
      fresh.appendChild(empty);
    }
    decisions.replaceChildren(fresh);
  }

  function cells(tr, texts, classes) {
    texts.forEach(function (text, i) { tr.appendChild(cell(i ? "td" : "th", text, classes[i])); });
    return tr;
  }

  function node(className, address) {
    var tr = document.createElement("tr");
    tr.className = className;
    tr.setAttribute("data-address", address);
    return tr;
  }

  /* The store: which Redis node takes the writes, which replicas are in sync.
     Absent from the JSON (left out for some visitors): the section goes. */
  function drawStore(store) {
    var section = document.getElementById("store");
    if (!section) { return; }
    if (!store) { section.hidden = true; return; }
    section.hidden = false;
    document.getElementById("store-address").textContent = store.address;
    document.getElementById("store-role").textContent = store.role;
    document.getElementById("store-in-sync").textContent = String(store.replicas_in_sync);
    document.getElementById("store-replicas").textContent = String(store.replicas.length);
    document.getElementById("store-need").textContent = String(store.writes_need);
    document.getElementById("store-refusing").hidden = store.writes_accepted;
    var summary = document.getElementById("store-summary");
    if (store.writes_accepted) { summary.removeAttribute("data-refusing"); }
    else { summary.setAttribute("data-refusing", ""); }
    var fresh = document.createDocumentFragment();
    fresh.appendChild(cells(node("node primary", store.address),
      [store.address, store.role, "–", "–", "–"], ["", "", "", "num", "num"]));
    store.replicas.forEach(function (link) {
      fresh.appendChild(cells(
        node("node replica " + (link.in_sync ? "alive" : "gone"), link.address),
        [link.address, "replica (" + link.state + ")", link.in_sync ? "yes" : "no",
         link.lag_seconds + " s ago", link.behind_bytes + " bytes"],
        ["", "", "state", "num", "num"]));
    });
    document.getElementById("store-rows").replaceChildren(fresh);
  }

  function draw(data) {
    document.getElementById("page-served-by").textContent = data.served_by;
    document.getElementById("alive-count").textContent = String(data.alive);
    document.getElementById("replica-count").textContent = String(data.replicas.length);
    var fresh = document.createDocumentFragment();
    data.replicas.forEach(function (r) {
      fresh.appendChild(row(r, data.served_by, data.details));
    });
    rows.replaceChildren(fresh);
    drawAutoscale(data.autoscale, data.generated_at);
    drawStore(data.store);
    summary.removeAttribute("data-error");
  }

  function refresh() {
    fetch(api, { headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(draw)
      .catch(function () { summary.setAttribute("data-error", "stale"); })
      .then(function () { window.setTimeout(refresh, every); });
  }

  window.setTimeout(refresh, every);
}());
