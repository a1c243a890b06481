// Drives the weir console in headless Chromium (Debian's, never a
// downloaded one) for tests/console.rs, and prints what it saw as JSON.
// The Rust test holds the assertions; this script only acts and reads.
//
//   node drive.mjs '{"base": "http://127.0.0.1:PORT", ...}'
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const seen = {};
const shot = (page, name) =>
  page.screenshot({ path: `${cfg.screenshots}/${name}.png`, fullPage: true });

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  // Script errors and CSP refusals; a failed subresource by its URL (a
  // document answering 404 on purpose is not one).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && r.request().resourceType() !== "document") errors.push(`${r.status()} ${r.url()}`);
  });
  page.on("pageerror", (e) => errors.push(String(e)));

  // Nothing without a token: every page goes to sign-in.
  seen.without_token = [];
  for (const path of ["/console/runs", `/console/runs/${cfg.failed_run}`, "/console/flows", "/console/outbox"]) {
    await page.goto(cfg.base + path);
    seen.without_token.push({ path, url: page.url(), text: await page.locator("body").innerText() });
  }
  await shot(page, "sign-in");

  // Sign in as tenant a: back to the page that asked for it (the outbox).
  await page.fill("#token", cfg.tenant_a);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/outbox/);
  seen.after_sign_in = new URL(page.url()).pathname;
  await page.goto(`${cfg.base}/console/runs`);
  seen.a_runs = await page.$$eval("tr[data-run]", (rows) => rows.map((r) => r.dataset.run));
  await shot(page, "runs-tenant-a");

  // The flows page: the flow's SVG, one shape per node.
  await page.goto(`${cfg.base}/console/flows`);
  const flow = page.locator(`article#flow-${cfg.flow}`);
  seen.flow_nodes = await flow.locator("svg g.node").evaluateAll((gs) =>
    gs.map((g) => ({ id: g.dataset.node, class: g.getAttribute("class"), shapes: g.querySelectorAll("rect,ellipse,polygon").length })));
  seen.flow_labels = await flow.locator("svg text.route").evaluateAll((ts) => ts.map((t) => t.textContent));
  await shot(page, "flows");

  // The failed run: the failing node's error, another node's output.
  await page.goto(`${cfg.base}/console/runs/${cfg.failed_run}`);
  seen.run_status = await page.locator("header.run-head .badge").innerText();
  seen.failed_error = await page.locator(`details[data-node="${cfg.failing_node}"] pre.error`).innerText();
  const other = page.locator(`details[data-node="${cfg.other_node}"]`);
  await other.locator("summary").click();
  seen.other_output = await other.locator("pre.json").last().innerText();
  seen.graph_classes = await page.locator("svg.flow-graph g.node").evaluateAll((gs) =>
    Object.fromEntries(gs.map((g) => [g.dataset.node, g.getAttribute("class")])));
  // Markup in the output stays text: no element was made of it.
  seen.injected_elements = await page.locator("main script, main img[src='x']").count();
  // A node of the graph takes the keyboard: Enter opens its details.
  await page.focus('svg.flow-graph g.node[data-node="check"]');
  await page.keyboard.press("Enter");
  seen.enter_opens = await page.locator('details[data-node="check"]').evaluate((d) => d.open);
  seen.attempt_before = await page.locator("dl.facts dt:text-is('Attempt') + dd").innerText();
  await shot(page, "run-failed");

  // Retry: the run runs again; the page updates itself to the new attempt.
  await page.click("form[action*='/retry'] button");
  await page.waitForURL(new RegExp(`/console/runs/${cfg.failed_run}$`));
  await page.waitForFunction(() => {
    const dd = [...document.querySelectorAll("dl.facts dt")].find((d) => d.textContent === "Attempt");
    const badge = document.querySelector("header.run-head .badge");
    return dd && dd.nextElementSibling.textContent === "2" && badge && badge.textContent === "failed";
  }, null, { timeout: 20000 });
  seen.attempt_after = await page.locator("dl.facts dt:text-is('Attempt') + dd").innerText();
  seen.failing_attempts = await page.locator(`details[data-node="${cfg.failing_node}"] summary`).innerText();
  await shot(page, "run-retried");

  // A run that is still running changes status on the page without a reload.
  const started = await page.request.post(`${cfg.base}/api/v1/flows/slow/runs`, {
    headers: { authorization: `Bearer ${cfg.tenant_a}` }, data: { input: {} } });
  seen.slow_run = (await started.json()).run_id;
  await page.goto(`${cfg.base}/console/runs/${seen.slow_run}`);
  seen.slow_before = await page.locator("header.run-head .badge").innerText();
  await page.evaluate(() => { window.__same_document = true; });
  await page.waitForFunction(() => document.querySelector("header.run-head .badge")?.textContent === "succeeded", null, { timeout: 20000 });
  seen.slow_after = await page.locator("header.run-head .badge").innerText();
  seen.slow_same_document = await page.evaluate(() => window.__same_document === true);

  // Keyboard: the first Tab reaches the skip link, then the navigation.
  await page.goto(`${cfg.base}/console/runs`);
  await page.keyboard.press("Tab");
  seen.first_tab = await page.evaluate(() => document.activeElement?.textContent);

  // A narrow window and dark mode.
  await page.setViewportSize({ width: 420, height: 800 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(`${cfg.base}/console/runs/${cfg.failed_run}`);
  seen.narrow_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  seen.dark_background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await shot(page, "run-narrow-dark");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: "light" });

  // Sign out, then tenant b: its runs only; a's run is not there for it.
  await page.click("header.top form[action='/console/sign-out'] button");
  await page.waitForURL(/sign-in/);
  seen.signed_out_text = await page.locator("body").innerText();
  await page.fill("#token", cfg.tenant_b);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/runs/);
  seen.b_runs = await page.$$eval("tr[data-run]", (rows) => rows.map((r) => r.dataset.run));
  const foreign = await page.goto(`${cfg.base}/console/runs/${cfg.failed_run}`);
  seen.b_foreign_status = foreign.status();
  seen.b_foreign_text = await page.locator("main").innerText();
  await shot(page, "tenant-b-foreign-run");

  // An expired session: back to sign-in with the reason.
  await context.clearCookies();
  const url = new URL(cfg.base);
  await context.addCookies([{ name: "weir_console", value: cfg.expired, domain: url.hostname, path: "/console", httpOnly: true, sameSite: "Strict" }]);
  await page.goto(`${cfg.base}/console/runs`);
  seen.expired_url = page.url();
  seen.expired_text = await page.locator("body").innerText();

  // The admin sees every tenant's runs.
  await page.goto(`${cfg.base}/console/sign-in`);
  await page.fill("#token", cfg.admin);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/runs/);
  seen.admin_runs = await page.$$eval("tr[data-run]", (rows) => rows.map((r) => r.dataset.run));
  for (const [name, path] of [["connections", "/console/connections"], ["outbox", "/console/outbox"]]) {
    await page.goto(cfg.base + path);
    await shot(page, name);
  }
  seen.script_errors = errors;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(seen));
