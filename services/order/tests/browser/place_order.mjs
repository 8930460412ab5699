// The web UI in a real browser: Debian's Chromium, headless, driven by playwright-core.
//
//   node place_order.mjs <base_url>
//
// Environment: PIZZA_CHROMIUM_BIN (the browser), PIZZA_PLAYWRIGHT_DIR (the playwright-core package
// directory), both printed by `deploy/local/tools.sh env`; PIZZA_ADMIN_TOKEN (the services' admin
// token, for the faults panel); PIZZA_JAEGER_URL (optional: Jaeger's UI, opened through the trace
// link); PIZZA_BROWSER_CUSTOMER (optional: the customer's name, phone, street, postal_code and city
// as JSON); PIZZA_BROWSER_SCREENSHOT (optional: where to save a screenshot of the finished order).
//
// What it does, as a customer would: opens `/`, adds pizzas from the menu, tries to order with an
// empty form and reads the problem the API answers, fills the form, places the order, waits until
// the timeline shows the order delivered and completed, checks the "View trace in Jaeger" link
// names the order's trace, and follows it to Jaeger's UI until the trace shows there. Then, as a
// workshop host, it sets and clears the kitchen's fault plan through the panel. Last, it places a second
// order while the kitchen's events are held back (so the order waits for the kitchen) and cancels it
// with the Cancel button: the cancel carries the token the order was placed with, and the timeline
// ends cancelled. Along the way it
// checks that the UI's page fetched nothing from anywhere but the service, put no customer detail
// in a URL or the console, and threw no error.
//
// Prints `ORDER_ID=<uuid>` and `TRACE_ID=<hex>` on success and exits 0; any failure prints what was
// expected and what the page showed, and exits 1. Every wait is bounded.
import { createRequire } from "node:module";
import process from "node:process";

const ORDER_LIMIT_MS = 60_000;
const STEP_LIMIT_MS = 15_000;

const base = (process.argv[2] || "").replace(/\/$/, "");
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(base)) {
  fail(`usage: node place_order.mjs http://127.0.0.1:<port> (got ${JSON.stringify(process.argv[2])})`);
}
const chromiumBin = process.env.PIZZA_CHROMIUM_BIN;
const playwrightDir = process.env.PIZZA_PLAYWRIGHT_DIR;
if (!chromiumBin || !playwrightDir) {
  fail("PIZZA_CHROMIUM_BIN and PIZZA_PLAYWRIGHT_DIR are not set: run deploy/local/tools.sh install, then eval \"$(deploy/local/tools.sh env)\"");
}
const adminToken = process.env.PIZZA_ADMIN_TOKEN || "";
// Jaeger's UI, whose trace page the "View trace in Jaeger" link opens (also on this machine).
const jaegerUrl = (process.env.PIZZA_JAEGER_URL || "").replace(/\/$/, "");
if (jaegerUrl && !/^http:\/\/127\.0\.0\.1:\d+$/.test(jaegerUrl)) {
  fail(`PIZZA_JAEGER_URL must be http://127.0.0.1:<port>, got ${jaegerUrl}`);
}

// The customer: distinctive strings, so finding one in a URL, a console line (here) or a span (the
// Rust test, which passes its own in PIZZA_BROWSER_CUSTOMER) is unambiguous.
const CUSTOMER = process.env.PIZZA_BROWSER_CUSTOMER
  ? JSON.parse(process.env.PIZZA_BROWSER_CUSTOMER)
  : { name: "Ada Browsertest", phone: "+39 055 7654321", street: "7 Headless Way", postal_code: "50123", city: "Firenze" };

function fail(message) {
  process.stderr.write(`place_order.mjs: FAILED: ${message}\n`);
  process.exit(1);
}

function log(message) {
  process.stderr.write(`[browser ${((Date.now() - started) / 1000).toFixed(1)}s] ${message}\n`);
}

const started = Date.now();
const { chromium } = createRequire(import.meta.url)(playwrightDir);

// Launch flags: no sandbox because CI runs as root; no /dev/shm use because containers keep it small.
const browser = await chromium.launch({
  executablePath: chromiumBin,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  timeout: STEP_LIMIT_MS * 2,
});
log(`launched ${chromiumBin} (${browser.version()})`);

const problems = [];
const requestUrls = [];
const consoleLines = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1100 } });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_LIMIT_MS);
  page.on("pageerror", (err) => problems.push(`uncaught error in the page: ${err.message}`));
  page.on("console", (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  // Nothing from the internet: every request must go to the service itself. Anything else is
  // refused (so the test never leaves the machine) and recorded as a failure.
  await page.route("**/*", (route) => {
    const url = route.request().url();
    requestUrls.push(url);
    if (url.startsWith(`${base}/`) || url === base) {
      return route.continue();
    }
    problems.push(`the page requested ${url}, which is not the order service`);
    return route.abort();
  });

  await page.goto(`${base}/`, { waitUntil: "load" });
  await page.waitForSelector("body[data-ready=true]");
  const title = await page.title();
  if (!/pizza/i.test(title)) throw new Error(`page title is ${JSON.stringify(title)}`);

  // ---- the menu and the cart ----
  const addButtons = page.locator("#menu button[data-testid^=add-]");
  await addButtons.first().waitFor();
  const pizzas = await addButtons.evaluateAll((bs) => bs.map((b) => b.dataset.testid.slice("add-".length)));
  if (pizzas.length < 2) throw new Error(`the menu lists ${pizzas.length} pizzas, expected at least 2`);
  log(`menu: ${pizzas.join(", ")}`);
  const [first, second] = pizzas;
  await page.getByTestId(`add-${first}`).click();
  await page.getByTestId(`add-${first}`).click();
  await page.getByTestId(`add-${second}`).click();
  await expectValue(page.getByTestId(`qty-${first}`), "2");
  await expectValue(page.getByTestId(`qty-${second}`), "1");
  // Quantities typed into the cart count too: 3 of the second pizza, then back to 1.
  await page.getByTestId(`qty-${second}`).fill("3");
  await page.getByTestId(`qty-${second}`).dispatchEvent("change");
  await expectValue(page.getByTestId(`qty-${second}`), "3");
  await page.getByTestId(`qty-${second}`).fill("1");
  await page.getByTestId(`qty-${second}`).dispatchEvent("change");
  const total = await page.getByTestId("cart-total").textContent();
  if (!/^\d+\.\d\d$/.test(total || "")) throw new Error(`cart total reads ${JSON.stringify(total)}`);
  log(`cart: 2 × ${first}, 1 × ${second}, total ${total}`);

  // ---- bad input: the API's problem+json is shown to the user ----
  const [rejected] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${base}/orders` && r.request().method() === "POST"),
    page.getByTestId("place-order").click(),
  ]);
  if (rejected.status() < 400 || rejected.status() >= 500) {
    throw new Error(`an order without customer details was answered ${rejected.status()}, expected a 4xx`);
  }
  const rejectedType = rejected.headers()["content-type"] || "";
  if (!rejectedType.startsWith("application/problem+json")) {
    throw new Error(`the 4xx came as ${rejectedType}, expected application/problem+json`);
  }
  const rejectedBody = await rejected.json();
  await page.getByTestId("notice").waitFor({ state: "visible" });
  const noticeText = await page.getByTestId("notice").innerText();
  if (!noticeText.includes(rejectedBody.title)) {
    throw new Error(`the notice ${JSON.stringify(noticeText)} does not show the problem's title ${rejectedBody.title}`);
  }
  log(`empty form: ${rejected.status()} ${rejectedBody.title}, shown to the user`);

  // ---- the customer, by the fields' labels (so the labels exist and point at the inputs) ----
  await page.getByLabel("Name", { exact: true }).fill(CUSTOMER.name);
  await page.getByLabel("Phone").fill(CUSTOMER.phone);
  await page.getByLabel("Street and number").fill(CUSTOMER.street);
  await page.getByLabel("Postal code").fill(CUSTOMER.postal_code);
  await page.getByLabel("City").fill(CUSTOMER.city);

  const [placed] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${base}/orders` && r.request().method() === "POST"),
    page.getByTestId("place-order").click(),
  ]);
  const placedBody = await placed.json().catch(() => null);
  if (placed.status() !== 202 || !placedBody) {
    throw new Error(`POST /orders answered ${placed.status()}: ${JSON.stringify(placedBody)}`);
  }
  const idempotencyKey = placed.request().headers()["idempotency-key"] || "";
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(idempotencyKey)) {
    throw new Error(`the order was sent with Idempotency-Key ${JSON.stringify(idempotencyKey)}, expected a v4 UUID`);
  }
  const sent = placed.request().postDataJSON();
  const quantities = Object.fromEntries(sent.items.map((i) => [i.pizza, i.quantity]));
  if (quantities[first] !== 2 || quantities[second] !== 1 || sent.items.length !== 2) {
    throw new Error(`the order sent items ${JSON.stringify(sent.items)}, expected 2 × ${first} and 1 × ${second}`);
  }
  const orderId = placedBody.order_id;
  const traceId = placedBody.trace_id;
  log(`placed order ${orderId} (trace ${traceId})`);

  await page.waitForFunction((id) => document.getElementById("order-id").textContent === id, orderId);

  // ---- the live timeline, until the order is done ----
  await page.waitForFunction(
    () => {
      const statuses = Array.from(document.querySelectorAll("#timeline [data-testid=timeline-entry]"), (li) => li.dataset.status);
      return statuses.includes("delivered") && statuses.includes("completed");
    },
    null,
    { timeout: ORDER_LIMIT_MS, polling: 250 },
  ).catch(async (err) => {
    const shown = await page.locator("#timeline").innerText().catch(() => "?");
    throw new Error(`within ${ORDER_LIMIT_MS / 1000} s the timeline did not show delivered and completed (${err.message}); it shows:\n${shown}`);
  });
  const timeline = await page.locator("#timeline [data-testid=timeline-entry]").evaluateAll((lis) =>
    lis.map((li) => ({ seq: Number(li.dataset.seq), status: li.dataset.status, text: li.textContent })),
  );
  const statuses = timeline.map((e) => e.status);
  for (const want of ["accepted", "in_preparation", "ready", "out_for_delivery", "delivered", "completed"]) {
    if (!statuses.includes(want)) throw new Error(`the timeline has no ${want}: ${statuses.join(" → ")}`);
  }
  const seqs = timeline.map((e) => e.seq);
  if (new Set(seqs).size !== seqs.length || seqs.some((s, i) => i > 0 && s <= seqs[i - 1])) {
    throw new Error(`timeline entries are duplicated or out of order: ${seqs.join(",")}`);
  }
  const onItsWay = timeline.filter((e) => e.status === "on_its_way");
  if (onItsWay.length > 0 && !onItsWay.every((e) => /\d+%/.test(e.text))) {
    throw new Error(`on_its_way entries without a progress percentage: ${JSON.stringify(onItsWay)}`);
  }
  await page.waitForFunction(() => document.getElementById("order-status").dataset.status === "completed");
  await page.waitForFunction(() => document.getElementById("stream-state").textContent === "finished");
  log(`timeline: ${statuses.join(" → ")}`);

  // ---- the trace link ----
  const link = page.getByRole("link", { name: "View trace in Jaeger" });
  await link.waitFor({ state: "visible" });
  const href = await link.getAttribute("href");
  if (!href || !href.includes(traceId) || !href.includes("/trace/")) {
    throw new Error(`the Jaeger link is ${JSON.stringify(href)}, expected .../trace/${traceId}`);
  }
  log(`trace link: ${href}`);

  // ---- click through to the trace in Jaeger's UI ----
  if (jaegerUrl) {
    if (!href.startsWith(`${jaegerUrl}/trace/`)) throw new Error(`the trace link ${href} is not on ${jaegerUrl}`);
    const [jaeger] = await Promise.all([context.waitForEvent("page"), link.click()]);
    // Jaeger's UI, too, is served whole from Jaeger: nothing from elsewhere.
    jaeger.on("request", (r) => {
      if (!r.url().startsWith(`${jaegerUrl}/`) && !r.url().startsWith("data:")) {
        problems.push(`Jaeger's page requested ${r.url()}`);
      }
    });
    // The services export spans in batches, every few seconds: reload until the trace is there.
    const deadline = Date.now() + ORDER_LIMIT_MS;
    let shown = false;
    while (!shown && Date.now() < deadline) {
      await jaeger.waitForLoadState("load");
      shown = await jaeger
        .getByText("POST /orders", { exact: false })
        .first()
        .waitFor({ timeout: 5_000 })
        .then(() => true, () => false);
      if (!shown) await jaeger.reload();
    }
    const jaegerTitle = await jaeger.title();
    if (!shown || !jaegerTitle.includes(traceId.slice(0, 7))) {
      throw new Error(`Jaeger's UI did not show trace ${traceId} with POST /orders (page title ${JSON.stringify(jaegerTitle)})`);
    }
    log(`Jaeger's UI shows the trace: ${jaegerTitle}`);
    await jaeger.close();
  }

  // ---- recent orders list the new one ----
  await page.waitForSelector(`#recent-orders [data-order-id="${orderId}"]`);

  if (process.env.PIZZA_BROWSER_SCREENSHOT) {
    await page.screenshot({ path: process.env.PIZZA_BROWSER_SCREENSHOT, fullPage: true });
    log(`screenshot: ${process.env.PIZZA_BROWSER_SCREENSHOT}`);
  }

  // ---- the workshop's fault panel, on the kitchen (through the order service's proxy) ----
  if (adminToken) {
    await page.locator("#faults-details > summary").click();
    await page.getByLabel("Service").selectOption("kitchen");
    await page.getByLabel("Admin token").fill(`${adminToken}-wrong`);
    const [denied] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/admin/services/kitchen/faults")),
      page.getByTestId("faults-load").click(),
    ]);
    if (denied.status() !== 401) throw new Error(`a wrong admin token got ${denied.status()}, expected 401`);
    await page.getByTestId("notice").waitFor({ state: "visible" });

    await page.getByLabel("Admin token").fill(adminToken);
    await page.getByLabel("Oven").fill("0.25");
    await page.getByLabel("Added latency (ms)").fill("0");
    await page.getByTestId("edge-kafka-kitchen-events").check();
    // A seed above 2^53 must reach the service digit for digit.
    await page.getByLabel("Seed").fill("12345678901234567891");
    const [applied] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/admin/services/kitchen/faults") && r.request().method() === "PUT"),
      page.getByTestId("faults-apply").click(),
    ]);
    const appliedText = await applied.text();
    if (applied.status() !== 200) throw new Error(`applying the kitchen's plan: ${applied.status()} ${appliedText}`);
    if (!/"seed"\s*:\s*12345678901234567891\b/.test(appliedText)) {
      throw new Error(`the kitchen's plan came back without the exact seed: ${appliedText}`);
    }
    const plan = JSON.parse(appliedText);
    if (plan.business_failure_rate.oven !== 0.25 || !plan.drop_trace_context.includes("kafka:kitchen.events")) {
      throw new Error(`the kitchen's plan is not the one set: ${appliedText}`);
    }
    await page.waitForFunction(() => /applied/.test(document.getElementById("faults-status").textContent));
    const storedToken = await page.evaluate(() => localStorage.getItem("pizza.adminToken"));
    if (storedToken !== adminToken) throw new Error("the admin token was not kept in localStorage");

    const [cleared] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/admin/services/kitchen/faults") && r.request().method() === "DELETE"),
      page.getByTestId("faults-clear").click(),
    ]);
    if (cleared.status() >= 300) throw new Error(`clearing the kitchen's plan: ${cleared.status()}`);
    const [reloaded] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/admin/services/kitchen/faults") && r.request().method() === "GET"),
      page.getByTestId("faults-load").click(),
    ]);
    const after = await reloaded.json();
    if (after.http_error_rate !== 0 || Object.values(after.business_failure_rate || {}).some((v) => v !== 0) ||
      (after.drop_trace_context || []).length !== 0) {
      throw new Error(`after clearing, the kitchen's plan is ${JSON.stringify(after)}`);
    }
    await expectValue(page.getByLabel("Oven"), "0");
    log("faults panel: wrong token refused (401), kitchen plan set with a 64-bit seed, cleared");
  }

  // ---- cancelling an order of its own, while the kitchen's events are held back ----
  if (adminToken) {
    const kitchenFaults = (method, plan) =>
      fetch(`${base}/admin/services/kitchen/faults`, {
        method,
        headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
        body: plan ? JSON.stringify(plan) : undefined,
      }).then((r) => {
        if (!r.ok) throw new Error(`${method} the kitchen's faults: ${r.status}`);
      });
    // Every kitchen event fails to publish: the order waits for `order-ready`, so the cancel lands
    // before any driver could have it, whatever the machine's speed.
    await kitchenFaults("PUT", { kafka_publish_failure_rate: 1.0 });
    try {
      await page.getByTestId(`add-${first}`).click();
      const [again] = await Promise.all([
        page.waitForResponse((r) => r.url() === `${base}/orders` && r.request().method() === "POST"),
        page.getByTestId("place-order").click(),
      ]);
      const againBody = await again.json();
      if (again.status() !== 202 || !/^[A-Za-z0-9_-]{43}$/.test(againBody.cancel_token || "")) {
        throw new Error(`the second order answered ${again.status()} without a cancel token: ${JSON.stringify(againBody)}`);
      }
      await page.waitForFunction((id) => document.getElementById("order-id").textContent === id, againBody.order_id);
      const cancelButton = page.getByTestId("cancel-order");
      await page.waitForFunction(() => !document.getElementById("cancel-order").disabled);
      const [cancelled] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith(`/orders/${againBody.order_id}/cancel`)),
        cancelButton.click(),
      ]);
      const sentToken = cancelled.request().postDataJSON().cancel_token;
      if (sentToken !== againBody.cancel_token) throw new Error("the cancel did not carry the order's cancel token");
      if (cancelled.url().includes(sentToken)) throw new Error("the cancel token went into a URL");
      if (cancelled.status() !== 202) throw new Error(`the cancel answered ${cancelled.status()}: ${await cancelled.text()}`);
      // The status comes with the stream's entry, the reason with the order read at its end.
      await page
        .waitForFunction(
          () =>
            document.getElementById("order-status").dataset.status === "cancelled" &&
            document.getElementById("order-reason").textContent !== "",
          null,
          { timeout: ORDER_LIMIT_MS },
        )
        .catch(async (err) => {
          const shown = await page.locator("#order-section").innerText().catch(() => "?");
          throw new Error(`the second order did not end cancelled with a reason (${err.message}); the page shows:\n${shown}`);
        });
      const reason = await page.locator("#order-reason").innerText();
      if (!reason.includes("customer-cancelled")) throw new Error(`the cancelled order shows the reason ${JSON.stringify(reason)}`);
      if (!(await cancelButton.isDisabled())) throw new Error("the Cancel button is still enabled on a cancelled order");
      log(`cancelled order ${againBody.order_id} with its token: ${reason}`);
    } finally {
      await kitchenFaults("DELETE");
    }
  }

  // ---- privacy: no customer detail in a URL or on the console ----
  for (const value of Object.values(CUSTOMER)) {
    const encoded = [value, encodeURIComponent(value), value.replace(/ /g, "+")];
    const inUrl = requestUrls.find((u) => encoded.some((v) => u.includes(v)));
    if (inUrl) problems.push(`a request URL carries customer data: ${inUrl}`);
    const inConsole = consoleLines.find((l) => l.includes(value));
    if (inConsole) problems.push(`the console shows customer data: ${inConsole}`);
  }
  if (problems.length > 0) throw new Error(problems.join("\n"));

  process.stdout.write(`ORDER_ID=${orderId}\nTRACE_ID=${traceId}\n`);
  log(`passed: ${requestUrls.length} requests, all to the service; ${consoleLines.length} console lines`);
} catch (err) {
  if (page && process.env.PIZZA_BROWSER_SCREENSHOT) {
    await page.screenshot({ path: process.env.PIZZA_BROWSER_SCREENSHOT, fullPage: true }).catch(() => {});
  }
  const notice = page ? await page.locator("#notice").innerText().catch(() => "") : "";
  await browser.close().catch(() => {});
  fail(`${err.message}${notice ? `\nthe page's notice: ${notice}` : ""}${problems.length ? `\nalso: ${problems.join("; ")}` : ""}`);
}
await browser.close();

async function expectValue(locator, want) {
  const deadline = Date.now() + STEP_LIMIT_MS;
  let got;
  while (Date.now() < deadline) {
    got = await locator.inputValue();
    if (got === want) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`expected ${want}, the field holds ${JSON.stringify(got)}`);
}
