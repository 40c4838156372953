// Drives the web dashboard in headless Chromium for test_web.py.
//
//   node web_check.mjs   (everything comes from the environment)
//
// PW_DIR      directory whose node_modules holds playwright-core
// CHROMIUM    the browser binary (default /usr/bin/chromium)
// BASE_URL    the proxy, e.g. http://127.0.0.1:PORT
// ENDPOINTS   JSON array of the configured endpoint names
// PIN_CLICK   endpoint to pin by clicking its pin button on the page
// PIN_API     endpoint to pin afterwards through POST /admin/pin from here
// SCREENSHOT  where to save the screenshot (PNG)
// USER_DATA   a fresh user-data-dir
// EXPECT_ACTIVE  when set, a request is in flight: the page must list it
// ACCESS_KEY  when set, the proxy has server.access_key_env: /dashboard must
//             answer 401 with the sign-in page, refuse a wrong key, open with
//             the right one and keep it for the tab (a reload asks no more)
// SCENARIO    "lifecycle": instead of the above, the proxy's life as the page
//             sees it (see lifecycle() below); then also
// SHOT_DIR    where its screenshots go (wide-*.png at 1400 px, phone.png at 390)
//             PIN_CLICK is pinned by a click, FAILING is an endpoint whose
//             checks fail.  The test that runs the proxy is asked to stop it
//             and start it again on the same port: this script prints
//             "@@ask stop" / "@@ask start" and reads "ok" from stdin.
//
// Prints one JSON line with what it saw and exits 0, or prints the failure
// on stderr and exits 1.  Every wait is bounded.

import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const env = process.env;
const require = createRequire(path.join(env.PW_DIR, "package.json"));
const { chromium } = require("playwright-core");

const base = env.BASE_URL;
const endpoints = JSON.parse(env.ENDPOINTS);
const result = { steps: [] };
const problems = [];
const external = [];
let browser;
let injecting = false;
let downExpected = false;   // the proxy is stopped on purpose: refused polls are expected
let expect401 = false;
const keyHeaders = env.ACCESS_KEY ? { "x-zephyr-key": env.ACCESS_KEY } : {};

function step(name, extra) {
  result.steps.push(Object.assign({ name, t: Date.now() }, extra || {}));
}

async function currentShown(page) {
  return (await page.textContent("#current-endpoint")).trim();
}

async function waitCurrent(page, name, ms) {
  const t0 = Date.now();
  await page.waitForFunction(
    (n) => document.getElementById("current-endpoint")?.textContent.trim() === n,
    name, { timeout: ms, polling: 50 });
  return Date.now() - t0;
}

// Asks the test (our parent) to do something to the proxy and waits for it.
let stdinLines = null;
async function ask(what) {
  if (!stdinLines) stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  step("ask " + what);
  process.stdout.write("@@ask " + what + "\n");
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== "ok") throw new Error("the test could not " + what + ": " + (done ? "EOF" : value));
}

// /status answers the page got, and its polls the stopped proxy refused
// (counted here, not by the page, so that they count on any page).
let answered = 0;
let refused = 0;

// Waits (bounded) until cond() holds; checks every 50 ms.
async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Waits until the page has had n more /status answers (and one more, so
// that the n-th has been rendered).
async function pollsLater(n) {
  const want = answered + n + 1;
  await waitFor(() => answered >= want, 15000, n + " more /status answers");
}

const isLive = () => document.getElementById("conn")?.classList.contains("live");

// What the page shows for the proxy's life: live data with hover tooltips,
// failure marks in the endpoint's colour and a legend with samples at
// 1400 px; the proxy stopped (greyed, "disconnected since", no countdown);
// started again (a restart marker, no "switched" banner, old notices gone,
// chart lines broken at the restart); a check_error and a group in panic
// (injected into /status); and a 390 px phone.
async function lifecycle(page) {
  const shot = (name) => page.screenshot({ path: path.join(env.SHOT_DIR, name), fullPage: true });
  // Each phase that fails is recorded and the next one runs, so that a
  // page that gets several things wrong shows all of them.
  result.phase_errors = {};
  const phase = async (name, fn) => {
    try { await fn(); step(name); } catch (e) { result.phase_errors[name] = String(e && e.message || e).split("\n")[0]; }
  };
  await page.goto(base + "/dashboard", { waitUntil: "load" });
  await page.waitForFunction(isLive, null, { timeout: 10000 });

  await phase("chart", async () => {
    // Failure marks in the endpoint's colour, the legend's samples.
    await page.waitForFunction((f) => document.querySelectorAll(`#chart .fail[data-endpoint="${f}"]`).length >= 1 &&
      document.querySelectorAll("#chart circle.pt").length >= 4, env.FAILING, { timeout: 20000 });
    result.fail_colours = await page.$$eval(`#chart .fail[data-endpoint="${env.FAILING}"]`, (m) => m.map((x) => x.getAttribute("stroke")));
    result.ok_colour = await page.$eval(`#chart circle.pt[data-endpoint="${env.FAILING}"]`, (c) => c.getAttribute("fill"));
  });
  await phase("legend", async () => {
    result.legend_samples = await page.$$eval("#legend > span", (ks) => ks.map((k) => {
      const s = k.querySelector("svg");
      return { text: k.textContent, drawn: s ? s.querySelectorAll("line,path").length : 0,
               w: s ? s.getBoundingClientRect().width : 0 };
    }));
  });
  await phase("tooltip", async () => {
    // Hover the newest point of the first endpoint.
    await page.waitForFunction(() => document.querySelectorAll("#chart circle").length >= 2, null, { timeout: 10000 });
    const pt = await page.$$eval("#chart circle", (cs) => {
      const c = cs[cs.length - 1], r = c.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2, ep: c.getAttribute("data-endpoint") };
    });
    await page.mouse.move(pt.x, pt.y);
    await page.waitForSelector("#chart-tip", { state: "visible", timeout: 3000 });
    // Still there after the next render (the chart redraws every second).
    await pollsLater(1);
    result.tooltip = { text: (await page.textContent("#chart-tip")).trim(), ep: pt.ep,
      visible: await page.isVisible("#chart-tip") };
    await page.screenshot({ path: path.join(env.SHOT_DIR, "wide-tooltip.png") });
  });
  await shot("wide-live.png");
  await page.mouse.move(5, 5);

  await phase("wide", async () => {
    // Layout at 1400 px: the tokens card's subtitle whole, no empty band
    // under the controls.
    result.wide = await page.evaluate(() => {
      const s = document.getElementById("c-tokens-s");
      const panel = document.getElementById("controls-panel").getBoundingClientRect();
      const row = document.querySelector("#controls-panel .controls").getBoundingClientRect();
      return { tokens_sub: s.textContent, tokens_cut: s.scrollWidth > s.clientWidth + 1 || s.scrollHeight > s.clientHeight + 1,
               below_controls: panel.bottom - row.bottom };
    });
  });

  // A reload of the configuration is not a restart.
  await ask("reload");
  await pollsLater(2);

  await phase("before", async () => {
    // A switch made by a click, and then a stale error notice: both are
    // about this process.
    await page.click(`button[data-pin="${env.PIN_CLICK}"]`);
    await waitCurrent(page, env.PIN_CLICK, 3000);
    result.banner_before = (await page.textContent("#switch-banner")).trim();
    injecting = true;
    await page.route("**/admin/check", (route) => route.fulfill({
      status: 400, contentType: "application/json",
      body: JSON.stringify({ type: "error", error: { type: "invalid_request_error", message: "zt stale notice" } }),
    }));
    await page.click("#btn-check");
    await page.waitForFunction(() => document.getElementById("notice")?.textContent.includes("zt stale notice"), null, { timeout: 3000 });
    await page.unroute("**/admin/check");
    injecting = false;
    result.notice_before = (await page.textContent("#notice")).trim();
    result.restarts_before = await page.evaluate(() => document.body.dataset.restarts || "0");
  });

  // The proxy stops.
  downExpected = true;
  const refusedBefore = refused;
  await ask("stop");
  await phase("down", async () => {
    const look = () => page.evaluate(() => {
      const main = getComputedStyle(document.querySelector("main"));
      const vis = (id) => { const e = document.getElementById(id); return !!(e && (e.offsetWidth || e.offsetHeight)); };
      const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : ""; };
      return { notice: text("notice"), banner: text("down-banner"), banner_shown: vis("down-banner"),
               page_text: document.body.innerText.includes("disconnected since"),
               opacity: Number(main.opacity), filter: main.filter, checks_sub: text("c-checks-s"),
               uptime: text("h-uptime"), switch_shown: vis("switch-banner") };
    });
    // Two refused polls: the page has seen the proxy gone.
    await waitFor(() => refused >= refusedBefore + 2, 10000, "two refused polls");
    const d1 = await look();
    // Three more refused polls later, nothing has counted on.
    const r1 = refused;
    await waitFor(() => refused >= r1 + 3, 10000, "three more refused polls");
    const d2 = await look();
    result.down = { first: d1, later: d2 };
  });
  await shot("wide-down.png");

  // It starts again (a new process on the same port).
  await ask("start");
  await page.waitForFunction(isLive, null, { timeout: 15000 });
  downExpected = false;
  await pollsLater(2);
  await phase("restart", async () => {
    result.after = await page.evaluate(() => {
      const vis = (id) => { const e = document.getElementById(id); return !!(e && (e.offsetWidth || e.offsetHeight)); };
      const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : ""; };
      return { restart_banner: text("restart-banner"), restart_shown: vis("restart-banner"),
               switch_text: text("switch-banner"), switch_shown: vis("switch-banner"), notice: text("notice"),
               greyed: document.body.classList.contains("disconnected"), down_shown: vis("down-banner"),
               restart_marks: document.querySelectorAll("#chart .mark-restart").length,
               events: Array.from(document.querySelectorAll("#events li")).slice(0, 3).map((l) => l.textContent) };
    });
  });
  await phase("line breaks", async () => {
    // Once the new process has checked, the first endpoint's check line is
    // two runs, not one straight across the gap.
    try {
      await page.waitForFunction((e) => document.querySelectorAll(`#chart polyline.ln-checks[data-endpoint="${e}"]`).length >= 2,
        endpoints[0], { timeout: 20000 });
    } finally {
      result.check_runs = await page.$$eval(`#chart polyline.ln-checks[data-endpoint="${endpoints[0]}"]`, (l) => l.length);
    }
  });
  await shot("wide-restarted.png");

  await phase("flags", async () => {
    // check_error on an endpoint and panic routing in a group, as the proxy
    // reports them (injected into /status, which is what the page reads).
    await page.route("**/status", async (route) => {
      const r = await route.fetch();
      const st = await r.json();
      const e = st.endpoints.find((x) => x.name === env.FAILING);
      e.status = "check_error";
      e.check_error = "zt model claude-gone is not served; set check_model";
      for (const g of st.groups) g.panic = true;
      await route.fulfill({ response: r, json: st });
    });
    try {
      await page.waitForFunction(() => document.querySelector("#endpoints").textContent.includes("zt model claude-gone"), null, { timeout: 5000 });
      await pollsLater(1);
      result.flags = await page.evaluate((f) => {
        const row = document.querySelector(`#endpoints tr[data-endpoint="${f}"]`);
        const card = document.getElementById("c-group-s");
        return { row: row.textContent, group_card: card.textContent, group_card_colour: getComputedStyle(card).color,
                 panic_tags: document.querySelectorAll("#endpoints .tag.panic").length,
                 cerr_shown: !!(row.querySelector("[data-kind=check_error]") || {}).offsetHeight };
      }, env.FAILING);
      await shot("wide-flags.png");
    } finally {
      await page.unroute("**/status");
    }
  });

  await phase("fallback", async () => {
    // Traffic served by a fallback group (issue 13), as /status reports it.
    await page.route("**/status", async (route) => {
      const r = await route.fetch();
      const st = await r.json();
      st.fallback = { active: true, group: "relay-b", last_s_ago: 1, requests: 3 };
      await route.fulfill({ response: r, json: st });
    });
    try {
      await page.waitForFunction(() => document.getElementById("c-group-s")?.textContent.includes("relay-b"), null, { timeout: 5000 });
      result.fallback = await page.evaluate(() => document.getElementById("c-group-s").textContent);
    } finally {
      await page.unroute("**/status");
    }
  });

  // A 390 px phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await pollsLater(2);   // rendered at the new width
  await phase("phone", async () => {
    result.phone = await page.evaluate(() => {
      const box = (e) => { const r = e.getBoundingClientRect(); return { l: r.left, r: r.right, t: r.top, b: r.bottom }; };
      const labs = Array.from(document.querySelectorAll("#chart text:not(.restart-label)")).map(box);
      let overlaps = 0;
      for (let i = 0; i < labs.length; i++) for (let j = i + 1; j < labs.length; j++) {
        const a = labs[i], b = labs[j];
        if (a.l < b.r - 0.5 && b.l < a.r - 0.5 && a.t < b.b - 0.5 && b.t < a.b - 0.5) overlaps++;
      }
      return { inner_width: window.innerWidth, inner_height: window.innerHeight,
               scroll_width: document.documentElement.scrollWidth,
               pins: Array.from(document.querySelectorAll("button[data-pin]")).map(box),
               cards: box(document.querySelector(".cards")), labels: labs.length, label_overlaps: overlaps };
    });
  });
  await shot("phone.png");
}

async function main() {
  // A persistent context is how playwright takes a user-data-dir; the test
  // gives a fresh one each run.
  browser = await chromium.launchPersistentContext(env.USER_DATA, {
    executablePath: env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 60000,
    viewport: { width: 1400, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage"],
  });
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(10000);
  const origin = new URL(base).origin;
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin + "/") && !u.startsWith("data:")) external.push(u);
  });
  page.on("response", (r) => { if (new URL(r.url()).pathname.endsWith("/status") && r.ok()) answered++; });
  page.on("requestfailed", (r) => { if (new URL(r.url()).pathname.endsWith("/status")) refused++; });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    // The browser itself logs the 400 this script injects on purpose.
    if (m.type() === "error" && !(injecting && m.text().includes("status of 400")) &&
        !(expect401 && m.text().includes("status of 401")) &&
        !(downExpected && m.text().includes("ERR_CONNECTION_REFUSED")))
      problems.push("console error: " + m.text());
  });

  if (env.SCENARIO === "lifecycle") {
    await lifecycle(page);
    result.external_requests = external;
    result.problems = problems;
    await browser.close();
    browser = null;
    console.log(JSON.stringify(result));
    return;
  }

  expect401 = !!env.ACCESS_KEY;
  const resp = await page.goto(base + "/dashboard", { waitUntil: "load" });
  const want = env.ACCESS_KEY ? 401 : 200;
  if (!resp || resp.status() !== want) throw new Error("GET /dashboard -> " + (resp && resp.status()));
  step("loaded", { content_type: resp.headers()["content-type"] });
  if (env.ACCESS_KEY) {
    // The sign-in page: no data, a key field; a wrong key is refused.
    if (await page.$("#endpoints")) throw new Error("the sign-in page shows the dashboard");
    result.signin_text = (await page.textContent("body")).trim();
    await page.fill("#key", "wrong-" + env.ACCESS_KEY.slice(0, 4));
    await page.click("#open");
    await page.waitForFunction(() => document.getElementById("err")?.textContent.includes("wrong"),
      null, { timeout: 5000 });
    result.signin_error = (await page.textContent("#err")).trim();
    await page.fill("#key", env.ACCESS_KEY);
    await page.click("#open");
    await page.waitForSelector("#endpoints", { timeout: 10000 });
    step("signed in");
  }

  // Every configured endpoint shows up in the endpoint table.
  await page.waitForFunction(
    (n) => document.querySelectorAll("#endpoints tbody tr[data-endpoint]").length === n,
    endpoints.length, { timeout: 10000 });
  const shown = await page.$$eval("#endpoints tbody tr[data-endpoint]",
    (rows) => rows.map((r) => r.getAttribute("data-endpoint")));
  const tableText = await page.textContent("#endpoints");
  for (const n of endpoints) {
    if (!shown.includes(n) || !tableText.includes(n)) throw new Error(`endpoint ${n} not shown (rows: ${shown})`);
  }
  result.shown = shown;
  await page.waitForFunction(() => document.getElementById("conn")?.classList.contains("live"),
    null, { timeout: 10000 });
  result.initial_current = await currentShown(page);
  step("endpoints shown", { current: result.initial_current });

  if (env.ACCESS_KEY) {
    // The key is kept for the tab: a reload opens the dashboard without asking.
    const again = await page.reload({ waitUntil: "load" });
    result.reload_status = again ? again.status() : null;
    await page.waitForFunction(() => document.getElementById("conn")?.classList.contains("live"),
      null, { timeout: 10000 });
    result.reload_asked = !!(await page.$("#key"));
    step("reloaded");
    expect401 = false;
  }

  // A request in flight is listed while it runs.
  if (env.EXPECT_ACTIVE) {
    await page.waitForFunction(
      () => document.querySelector("#requests tbody").textContent.includes("streaming"),
      null, { timeout: 5000 });
    result.active_requests = (await page.textContent("#requests tbody")).trim();
    step("active request shown");
  }

  // Sessions (issue 14): the count in the endpoint row and the sessions
  // table; the row's release button lets them go.
  if (env.SESSION_ON) {
    const on = env.SESSION_ON;
    await page.waitForFunction((n) => {
      const c = document.querySelector(`#endpoints tr[data-endpoint="${n}"] td.c-sess`);
      return c && c.textContent.trim() === "1";
    }, on, { timeout: 5000 });
    result.sessions_rows = await page.$$eval("#sessions tbody tr[data-session]",
      (rows) => rows.map((r) => r.textContent));
    await page.click(`button[data-release="${on}"]`);
    await page.waitForFunction((n) => {
      const c = document.querySelector(`#endpoints tr[data-endpoint="${n}"] td.c-sess`);
      return c && c.textContent.trim() === "0" &&
        document.querySelectorAll("#sessions tbody tr[data-session]").length === 0;
    }, on, { timeout: 5000 });
    result.sessions_released = true;
    step("sessions shown and released");
  }

  // A click on a pin button switches, and the page shows it.
  await page.click(`button[data-pin="${env.PIN_CLICK}"]`);
  result.click_switch_ms = await waitCurrent(page, env.PIN_CLICK, 3000);
  result.mode_after_click = await page.getAttribute("body", "data-mode");
  result.banner = (await page.textContent("#switch-banner")).trim();
  step("pinned by click", { ms: result.click_switch_ms });

  // A switch made elsewhere (the admin API) shows up within the poll.
  const r = await fetch(base + "/admin/pin", {
    method: "POST", headers: Object.assign({ "content-type": "application/json" }, keyHeaders),
    body: JSON.stringify({ endpoint: env.PIN_API }),
  });
  if (r.status !== 200) throw new Error("POST /admin/pin -> " + r.status + " " + (await r.text()));
  result.api_switch_ms = await waitCurrent(page, env.PIN_API, 3000);
  step("pinned by API", { ms: result.api_switch_ms });

  // Back to auto mode with the mode control.
  await page.click("#btn-auto");
  await page.waitForFunction(() => document.body.dataset.mode === "auto", null, { timeout: 3000 });
  result.mode_after_auto = await page.getAttribute("body", "data-mode");
  step("auto mode");

  // An admin error is shown, not swallowed.
  injecting = true;
  await page.route("**/admin/check", (route) => route.fulfill({
    status: 400, contentType: "application/json",
    body: JSON.stringify({ type: "error", error: { type: "invalid_request_error", message: "zt injected failure" } }),
  }));
  await page.click("#btn-check");
  await page.waitForFunction(() => {
    const n = document.getElementById("notice");
    return n.classList.contains("err") && n.textContent.includes("zt injected failure");
  }, null, { timeout: 3000 });
  result.error_notice = (await page.textContent("#notice")).trim();
  await page.unroute("**/admin/check");
  injecting = false;
  step("admin error shown");

  // The chart has drawn something for the endpoints.
  result.chart_nodes = await page.$$eval("#chart *", (n) => n.length);
  result.legend = (await page.textContent("#legend")).trim();
  result.events = await page.$$eval("#events li", (li) => li.map((x) => x.textContent));

  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
  step("screenshot");
  result.external_requests = external;
  result.problems = problems;
  await browser.close();
  browser = null;
  console.log(JSON.stringify(result));
}

const guard = setTimeout(() => {
  console.error("web_check: overall timeout; steps so far: " + JSON.stringify(result.steps));
  process.exit(1);
}, env.SCENARIO === "lifecycle" ? 150000 : 90000);

main().then(() => { clearTimeout(guard); process.exit(0); }, async (e) => {
  console.error("web_check failed: " + (e && e.stack ? e.stack : e));
  console.error("steps: " + JSON.stringify(result.steps));
  console.error("problems: " + JSON.stringify(problems));
  if (browser) await browser.close().catch(() => {});
  clearTimeout(guard);
  process.exit(1);
});
