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
//
// Prints one JSON line with what it saw and exits 0, or prints the failure
// on stderr and exits 1.  Every wait is bounded.

import { createRequire } from "node:module";
import path from "node:path";

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
    (n) => document.getElementById("current-endpoint").textContent.trim() === n,
    name, { timeout: ms, polling: 50 });
  return Date.now() - t0;
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
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    // The browser itself logs the 400 this script injects on purpose.
    if (m.type() === "error" && !(injecting && m.text().includes("status of 400")) &&
        !(expect401 && m.text().includes("status of 401")))
      problems.push("console error: " + m.text());
  });

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
    await page.waitForFunction(() => document.getElementById("err").textContent.includes("wrong"),
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
  await page.waitForFunction(() => document.getElementById("conn").classList.contains("live"),
    null, { timeout: 10000 });
  result.initial_current = await currentShown(page);
  step("endpoints shown", { current: result.initial_current });

  if (env.ACCESS_KEY) {
    // The key is kept for the tab: a reload opens the dashboard without asking.
    const again = await page.reload({ waitUntil: "load" });
    result.reload_status = again ? again.status() : null;
    await page.waitForFunction(() => document.getElementById("conn").classList.contains("live"),
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
}, 90000);

main().then(() => { clearTimeout(guard); process.exit(0); }, async (e) => {
  console.error("web_check failed: " + (e && e.stack ? e.stack : e));
  console.error("steps: " + JSON.stringify(result.steps));
  console.error("problems: " + JSON.stringify(problems));
  if (browser) await browser.close().catch(() => {});
  clearTimeout(guard);
  process.exit(1);
});
