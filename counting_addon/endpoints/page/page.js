// The live page (docs/live-page.md): polls this same path for JSON about once a second and
// shows each figure as text, the requests per second also as a uPlot chart.
//
// Everything shown that came from the proxy goes in with textContent, never as HTML: the
// counter_by series' label values are whatever clients sent (headers, paths).
"use strict";
(() => {
  const POLL_MS = 1000;
  // The proxy answers within 1.5 s even while Redis does not; past this it is gone.
  const TIMEOUT_MS = 5000;
  const CHART_SECONDS = 15 * 60;
  const TOP_SERIES = 20;
  const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];

  const integer = new Intl.NumberFormat("en-US");
  const oneDecimal = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const byId = (id) => document.getElementById(id);
  const put = (id, text) => {
    byId(id).textContent = text;
  };
  const clock = (date) => date.toTimeString().slice(0, 8);
  const isCount = (v) => Number.isInteger(v) && v >= 0;

  function duration(seconds) {
    const days = Math.floor(seconds / 86400);
    const hms = [Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60]
      .map((n) => String(n).padStart(2, "0"))
      .join(":");
    return (days ? `${days} d ` : "") + hms;
  }

  function sized(bytes) {
    const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = bytes;
    let unit = "";
    for (const next of units) {
      if (value < 1024) break;
      value /= 1024;
      unit = next;
    }
    return unit ? `${oneDecimal.format(value)} ${unit}` : null;
  }

  // A figure and, if any, a second reading of it underneath (bytes in KiB, uptime in s).
  function figure(id, text, detail) {
    const cell = byId(id);
    if (detail) {
      const small = document.createElement("small");
      small.textContent = detail;
      cell.replaceChildren(document.createTextNode(text), small);
    } else {
      cell.textContent = text;
    }
  }

  function share(part, whole) {
    return whole > 0 ? `${oneDecimal.format((100 * part) / whole)}%` : "-";
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const [text, numeric] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (numeric) td.className = "n";
      tr.append(td);
    }
    return tr;
  }

  // Requests per second from successive counts: the count's rise over the time between the
  // two answers. The first answer, a count that went down (counter.reset) and an answer after
  // a failed one restart it: a gap in the chart, never a negative or averaged-over-an-outage
  // point.
  const rate = {
    last: null,
    restarted: null,
    times: [],
    values: [],
    observe(counter) {
      const now = performance.now();
      const previous = this.last;
      this.last = { now, counter };
      if (previous !== null && counter < previous.counter) this.restarted = new Date();
      if (previous === null || counter < previous.counter || now <= previous.now) {
        this.push(null);
        return null;
      }
      const perSecond = (counter - previous.counter) / ((now - previous.now) / 1000);
      this.push(perSecond);
      return perSecond;
    },
    interrupt() {
      if (this.last !== null) this.push(null);
      this.last = null;
    },
    push(value) {
      const t = Date.now() / 1000;
      this.times.push(t);
      this.values.push(value);
      while (this.times.length && this.times[0] < t - CHART_SECONDS) {
        this.times.shift();
        this.values.shift();
      }
      chart.setData([this.times, this.values]);
      byId("chart").dataset.points = String(this.values.filter((v) => v !== null).length);
    },
  };

  const chartBox = byId("chart");
  const chart = new uPlot(
    {
      width: Math.max(300, chartBox.clientWidth),
      height: 220,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [
        {},
        {
          label: "requests/s",
          stroke: "#2b6cb0",
          fill: "rgba(43, 108, 176, 0.12)",
          width: 2,
          spanGaps: false,
          value: (u, v) => (v === null || v === undefined ? "-" : oneDecimal.format(v)),
        },
      ],
      axes: [
        // Ticks on whole seconds or minutes, labelled with the local time of day.
        {
          space: 70,
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900],
          values: (u, ticks) => ticks.map((t) => clock(new Date(t * 1000))),
        },
        { label: "requests/s", size: 60 },
      ],
    },
    [[], []],
    chartBox,
  );
  // Resized with its box, only when the width changed: a resize from within the observer's
  // own callback would be reported again.
  new ResizeObserver(() => {
    const width = Math.max(300, chartBox.clientWidth);
    if (width !== chart.width) chart.setSize({ width, height: 220 });
  }).observe(chartBox);

  function showResponses(responses) {
    const counts = CLASSES.map((c) => (isCount(responses?.[c]) ? responses[c] : 0));
    const total = counts.reduce((a, b) => a + b, 0);
    byId("responses-body").replaceChildren(
      ...CLASSES.map((c, i) => row([[c], [integer.format(counts[i]), true], [share(counts[i], total), true]])),
      row([["all"], [integer.format(total), true], ["", true]]),
    );
  }

  function showSeries(by) {
    const head = byId("series-head");
    const body = byId("series-body");
    if (!Array.isArray(by)) {
      put("series-note", "Not counted by series: counter_by is not set on this proxy.");
      head.replaceChildren();
      body.replaceChildren();
      return;
    }
    const labels = by.length ? Object.keys(by[0]).filter((k) => k !== "count") : [];
    const total = by.reduce((sum, s) => sum + (isCount(s.count) ? s.count : 0), 0);
    const shown = by.slice(0, TOP_SERIES);
    put(
      "series-note",
      `${integer.format(by.length)} series, ${integer.format(total)} requests in all` +
        (by.length > shown.length ? `; the largest ${shown.length} shown.` : "."),
    );
    const th = (text, numeric) => {
      const cell = document.createElement("th");
      cell.textContent = text;
      if (numeric) cell.className = "n";
      return cell;
    };
    head.replaceChildren(...labels.map((l) => th(l)), th("requests", true), th("share", true));
    body.replaceChildren(
      ...shown.map((s) =>
        row([...labels.map((l) => [String(s[l])]), [integer.format(s.count), true], [share(s.count, total), true]]),
      ),
    );
  }

  let staleSince = null;

  function good(body) {
    const perSecond = rate.observe(body.counter);
    figure("counter", integer.format(body.counter));
    const restarted = rate.restarted && `restarted ${clock(rate.restarted)}: the count went down`;
    figure("rate", perSecond === null ? "-" : oneDecimal.format(perSecond), restarted);
    for (const id of ["last_minute", "last_hour", "last_day"]) {
      put(id, isCount(body[id]) ? integer.format(body[id]) : "-");
    }
    if (isCount(body.uptime)) {
      figure("uptime", duration(body.uptime), `${integer.format(body.uptime)} s`);
    }
    for (const id of ["request_bytes", "response_bytes"]) {
      if (isCount(body[id])) figure(id, `${integer.format(body[id])} B`, sized(body[id]));
    }
    showResponses(body.responses);
    showSeries(body.by);
    put("updated", clock(new Date()));
    const redis = byId("redis");
    redis.textContent = "Redis answering";
    redis.className = "ok";
    staleSince = null;
    put("stale", "");
    byId("figures").classList.remove("stale");
  }

  function bad(problem) {
    rate.interrupt();
    const redis = byId("redis");
    redis.textContent = problem;
    redis.className = "down";
    staleSince ??= new Date();
    put("stale", `figures stale since ${clock(staleSince)}`);
    byId("figures").classList.add("stale");
  }

  function problemOf(status, body) {
    const error = typeof body?.error === "string" ? body.error : null;
    if (status === 503 && error) {
      const pending = isCount(body.pending) ? ` (${integer.format(body.pending)} counts waiting in this proxy)` : "";
      return `Redis not answering: ${error}${pending}`;
    }
    return `HTTP ${status}${error ? `: ${error}` : ""}`;
  }

  async function poll() {
    const started = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      // max-stale: the counts in Redis now, without waiting for this proxy's last ones to be
      // written (docs/endpoints.md): a dashboard's poll, one read however busy the proxy.
      const response = await fetch(location.pathname, {
        headers: { Accept: "application/json", "Cache-Control": "max-stale" },
        cache: "no-store",
        signal: abort.signal,
      });
      const body = await response.json().catch(() => null);
      if (response.ok && isCount(body?.counter)) {
        good(body);
      } else {
        bad(problemOf(response.status, body));
      }
    } catch (error) {
      bad(`The proxy did not answer: ${error.name === "AbortError" ? "timed out" : error.message}`);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
    }
  }

  poll();
})();
