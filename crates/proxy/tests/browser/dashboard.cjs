// Drives the admin dashboard in headless Chromium for crates/proxy/tests/dashboard.rs.
//
// usage: node dashboard.cjs <playwright-core dir> <dashboard url> <screenshot> <scenario json>
// scenario: { "endpoints": ["addr", ...], "victim": "addr", "route": "name" }
//
// Protocol with the Rust test on stdin/stdout: prints "READY" once every
// endpoint shows as active, waits for "GO" (the test has then made the
// victim unhealthy), prints "OK" when the page shows the change. Any failure
// prints "FAIL <reason>", saves a screenshot next to the requested one and
// exits 1.
"use strict";

const path = require("path");
const readline = require("readline");

const [pwDir, url, shot, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const { chromium } = require(path.join(pwDir, "node_modules", "playwright-core"));

const lines = readline.createInterface({ input: process.stdin });
function nextLine() {
  return new Promise((resolve) => lines.once("line", resolve));
}

const row = (addr, state) =>
  `tr[data-endpoint="${addr}"]` + (state ? `[data-state="${state}"]` : "");

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  try {
    await page.goto(url, { waitUntil: "domcontentloaded" });
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: 15000 });
    for (const ep of scenario.endpoints) {
      await page.waitForSelector(row(ep, "active"), { timeout: 15000 });
      await page.waitForSelector(`g.node[data-node$="/${ep}"][data-state="active"]`, { timeout: 15000 });
    }
    // Live figures: the route under load shows a non-zero rate.
    await page.waitForFunction((route) => {
      const cell = document.querySelector(`tr[data-route="${route}"] td[data-field="rps"]`);
      return cell && cell.textContent !== "0" && cell.textContent !== "–";
    }, scenario.route, { timeout: 15000 });
    const before = await page.getAttribute("body", "data-snapshot");
    console.log("READY");
    if ((await nextLine()).trim() !== "GO") throw new Error("expected GO");
    await page.waitForSelector(row(scenario.victim, "unhealthy"), { timeout: 20000 });
    await page.waitForSelector(`li[data-change="${scenario.victim}"]`, { timeout: 5000 });
    await page.waitForSelector(`g.node[data-node$="/${scenario.victim}"][data-state="unhealthy"]`, { timeout: 5000 });
    const after = await page.getAttribute("body", "data-snapshot");
    if (before === after) throw new Error("the page did not update between snapshots");
    for (const ep of scenario.endpoints.filter((e) => e !== scenario.victim)) {
      await page.waitForSelector(row(ep, "active"), { timeout: 5000 });
    }
    // Let a few more snapshots draw the sparklines before the picture.
    await page.waitForTimeout(2500);
    if (errors.length) throw new Error("page errors: " + errors.join("; "));
    await page.screenshot({ path: shot, fullPage: true });
    console.log("OK");
  } catch (e) {
    const failed = shot.replace(/\.png$/, "-failed.png");
    await page.screenshot({ path: failed, fullPage: true }).catch(() => {});
    console.log("FAIL " + (e && e.message ? e.message.split("\n")[0] : e) + " (screenshot: " + failed + ")");
    process.exitCode = 1;
  } finally {
    await browser.close();
    lines.close();
  }
}

main().catch((e) => {
  console.log("FAIL " + e);
  process.exit(1);
});
