// The control centre's live table: /control/stream (Server-Sent Events) sends a snapshot,
// then every write to a visible feed and the current alarms; rows are updated in place.
"use strict";

(() => {
  const tbody = document.querySelector("#devices tbody");
  const count = document.getElementById("alarm-count");
  const list = document.getElementById("alarms");
  const live = document.getElementById("live");
  const empty = document.getElementById("no-devices");
  if (!tbody || !count || !list || !live) return;

  const zones = new Map(); // node name -> IANA time zone of its community
  const labels = new Map(); // node name -> what to call it

  const formatTime = (t, zone) => {
    if (t === null || t === undefined) return "—";
    const parts = new Intl.DateTimeFormat("sv-SE", {
      timeZone: zone || "UTC", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    }).format(new Date(t * 1000));
    return parts; // sv-SE writes YYYY-MM-DD HH:MM:SS
  };

  const formatValue = (feed) => {
    if (feed.last_value === null || feed.last_value === undefined) return "—";
    const shown = Number(feed.last_value.toPrecision(6)).toString();
    return feed.unit ? `${shown} ${feed.unit}` : shown;
  };

  const cell = (row, text, name) => {
    const td = document.createElement("td");
    if (name) td.className = name;
    td.textContent = text;
    row.appendChild(td);
    return td;
  };

  const rowOf = (feed) => {
    let row = tbody.querySelector(`tr[data-feed="${Number(feed.id)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.node = feed.node;
      row.dataset.feed = String(feed.id);
      cell(row, labels.get(feed.node) || feed.node);
      cell(row, feed.name);
      cell(row, "", "value");
      cell(row, "", "time");
      cell(row, "—", "state");
      tbody.appendChild(row);
      if (empty) empty.hidden = true;
    }
    return row;
  };

  const showFeed = (feed) => {
    const row = rowOf(feed);
    row.querySelector(".value").textContent = formatValue(feed);
    row.querySelector(".time").textContent = formatTime(feed.last_time, zones.get(feed.node));
  };

  const showAlarms = (alarms) => {
    const silent = new Set();
    const outside = new Map();
    list.replaceChildren();
    for (const alarm of alarms) {
      if (alarm.kind === "silent") silent.add(alarm.node);
      else outside.set(String(alarm.feed_id), alarm);
      const item = document.createElement("li");
      item.className = "alarm";
      item.dataset.kind = alarm.kind;
      item.dataset.node = alarm.node;
      item.textContent = alarm.message;
      list.appendChild(item);
    }
    for (const row of tbody.querySelectorAll("tr")) {
      const offline = silent.has(row.dataset.node);
      const ranged = outside.get(row.dataset.feed);
      row.classList.toggle("alarm", offline || Boolean(ranged));
      row.dataset.state = offline ? "offline" : ranged ? "out_of_range" : "ok";
      row.querySelector(".state").textContent = offline ? "offline" : ranged ? "out of range" : "ok";
    }
    count.dataset.count = String(alarms.length);
    count.textContent = `${alarms.length} alarm${alarms.length === 1 ? "" : "s"}`;
    count.classList.toggle("alarm", alarms.length > 0);
  };

  const showSnapshot = (snapshot) => {
    tbody.replaceChildren();
    zones.clear();
    labels.clear();
    for (const node of snapshot.nodes) {
      zones.set(node.name, node.timezone);
      labels.set(node.name, node.label || node.name);
      for (const feed of node.feeds) showFeed(feed);
    }
    if (empty) empty.hidden = snapshot.nodes.length > 0;
    showAlarms(snapshot.alarms);
  };

  const stream = new EventSource("/control/stream");
  stream.addEventListener("open", () => {
    live.dataset.live = "yes";
    live.textContent = "live";
  });
  stream.addEventListener("error", () => {
    live.dataset.live = "no";
    live.textContent = "reconnecting…"; // EventSource retries by itself
  });
  stream.addEventListener("snapshot", (event) => showSnapshot(JSON.parse(event.data)));
  stream.addEventListener("alarms", (event) => showAlarms(JSON.parse(event.data).alarms));
  stream.addEventListener("feeds", (event) => {
    for (const feed of JSON.parse(event.data).feeds) showFeed(feed);
  });
})();
