// The order service's web UI: menu, cart, placing an order, its live timeline over server-sent events,
// the link to its trace in Jaeger, recent orders, and the workshop's fault panel.
//
// Plain browser JavaScript with no build step and no third-party code, served by the order service.
// Rules it keeps:
// - Customer details travel only in the POST body: never in a URL, never in storage, never in the
//   console. The order id (a random UUID) is the only thing that appears in URLs.
// - The cancel token POST /orders answers with is the capability to cancel that order. It is kept in
//   this tab's sessionStorage (so a reload can still cancel) and sent only in the cancel's body; an
//   order opened from the list without its token cannot be cancelled from here.
// - Everything from the server is put on the page with textContent, never parsed as HTML.
// - Every error the API answers is RFC 9457 problem+json; its title, detail and per-field errors are
//   shown as they are, because they are written for the person at the keyboard.
"use strict";

(() => {
  /** Statuses after which an order never changes (the server sends `end` after one of them). */
  const TERMINAL = new Set(["completed", "cancelled", "rejected"]);
  /** The trace-context edges a workshop usually breaks, offered as checkboxes. */
  const EDGES = [
    "http:kitchen",
    "kafka:kitchen.events",
    "kafka:delivery.requests",
    "kafka:delivery.events",
    "kafka:orders.events",
  ];
  const TOKEN_KEY = "pizza.adminToken";
  const CANCEL_TOKENS_KEY = "pizza.cancelTokens";
  const MAX_QUANTITY = 20;
  const MAX_LINES = 20;

  const $ = (id) => document.getElementById(id);

  /** Pizzas by id, as GET /menu lists them (in menu order). */
  const menu = new Map();
  /** Quantities by pizza id. */
  const cart = new Map();
  /** The order on screen: its id, its event stream, the seqs already shown, its poll timer. */
  let current = null;

  // ---- HTTP ------------------------------------------------------------------------------------------

  /**
   * Calls the API and returns `{ ok, status, body, text }`; `body` is the parsed JSON (a problem for
   * errors) or null. Network failures come back as a synthetic problem so callers handle one shape.
   */
  async function api(method, path, { json, headers = {} } = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = typeof json === "string" ? json : JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return {
        ok: false,
        status: 0,
        body: { title: "The order service did not answer", detail: String(err && err.message ? err.message : err) },
        text: "",
      };
    }
    const text = await response.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = response.ok ? null : { title: `HTTP ${response.status}`, detail: text.slice(0, 300) };
      }
    }
    if (!response.ok && (body === null || typeof body !== "object")) {
      body = { title: `HTTP ${response.status}`, detail: response.statusText };
    }
    return { ok: response.ok, status: response.status, body, text };
  }

  // ---- cancel tokens ------------------------------------------------------------------------------------

  /** Tokens kept in memory when sessionStorage refuses them. */
  const memoryTokens = {};

  /** The cancel tokens of the orders this tab placed, by order id. */
  function cancelTokens() {
    try {
      return JSON.parse(sessionStorage.getItem(CANCEL_TOKENS_KEY) || "{}") || {};
    } catch {
      return {};
    }
  }

  function rememberCancelToken(id, token) {
    if (!token) return;
    const tokens = cancelTokens();
    tokens[id] = token;
    try {
      sessionStorage.setItem(CANCEL_TOKENS_KEY, JSON.stringify(tokens));
    } catch {
      // Storage may be disabled (private mode); the token then lasts as long as the page.
      memoryTokens[id] = token;
    }
  }

  const cancelTokenFor = (id) => cancelTokens()[id] || memoryTokens[id] || null;

  // ---- notices -----------------------------------------------------------------------------------------

  /** Shows a problem+json body (title, detail, per-field errors) in the notice area. */
  function showProblem(context, problem, status) {
    const box = $("notice");
    box.replaceChildren();
    box.className = "notice error";
    const head = document.createElement("strong");
    head.dataset.testid = "problem-title";
    const title = (problem && problem.title) || "Something went wrong";
    head.textContent = `${context}: ${title}${status ? ` (${status})` : ""}`;
    box.append(head);
    if (problem && problem.detail) {
      const p = document.createElement("p");
      p.dataset.testid = "problem-detail";
      p.textContent = problem.detail;
      box.append(p);
    }
    if (problem && Array.isArray(problem.errors) && problem.errors.length > 0) {
      const ul = document.createElement("ul");
      ul.dataset.testid = "problem-errors";
      for (const e of problem.errors) {
        const li = document.createElement("li");
        li.textContent = `${e.field}: ${e.message}`;
        ul.append(li);
      }
      box.append(ul);
    }
    box.append(closeButton());
    box.hidden = false;
  }

  function showInfo(message) {
    const box = $("notice");
    box.replaceChildren();
    box.className = "notice info";
    const p = document.createElement("p");
    p.textContent = message;
    box.append(p, closeButton());
    box.hidden = false;
  }

  function closeButton() {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "close";
    b.textContent = "Dismiss";
    b.addEventListener("click", clearNotice);
    return b;
  }

  function clearNotice() {
    $("notice").hidden = true;
    $("notice").replaceChildren();
  }

  // ---- formatting --------------------------------------------------------------------------------------

  const money = (cents) => (cents / 100).toFixed(2);
  const label = (status) => String(status || "").replace(/_/g, " ");

  function clock(at) {
    const d = new Date(at);
    return Number.isNaN(d.getTime()) ? String(at) : d.toLocaleTimeString([], { hour12: false });
  }

  // ---- menu and cart -----------------------------------------------------------------------------------

  async function loadMenu() {
    const r = await api("GET", "/menu");
    if (!r.ok) {
      $("menu-status").textContent = "The menu could not be loaded.";
      showProblem("Loading the menu", r.body, r.status);
      return;
    }
    menu.clear();
    const list = $("menu");
    list.replaceChildren();
    for (const pizza of r.body.pizzas || []) {
      menu.set(pizza.id, pizza);
      const li = document.createElement("li");
      li.dataset.testid = `menu-item-${pizza.id}`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = pizza.name;
      const price = document.createElement("span");
      price.className = "price";
      price.textContent = money(pizza.price_cents);
      const add = document.createElement("button");
      add.type = "button";
      add.id = `add-${pizza.id}`;
      add.dataset.testid = `add-${pizza.id}`;
      add.textContent = "Add";
      add.setAttribute("aria-label", `Add ${pizza.name} to the order`);
      add.addEventListener("click", () => addToCart(pizza.id));
      li.append(name, price, add);
      list.append(li);
    }
    $("menu-status").textContent = menu.size ? "" : "The menu is empty.";
    $("menu-status").hidden = menu.size > 0;
    renderCart();
  }

  function addToCart(id) {
    if (!cart.has(id) && cart.size >= MAX_LINES) {
      showInfo(`An order holds at most ${MAX_LINES} different pizzas.`);
      return;
    }
    cart.set(id, Math.min((cart.get(id) || 0) + 1, MAX_QUANTITY));
    renderCart();
  }

  function renderCart() {
    const body = $("cart-items");
    body.replaceChildren();
    let total = 0;
    for (const [id, qty] of cart) {
      const pizza = menu.get(id) || { name: id, price_cents: 0 };
      total += pizza.price_cents * qty;
      const tr = document.createElement("tr");
      tr.dataset.testid = `cart-line-${id}`;
      const name = document.createElement("td");
      name.textContent = pizza.name;
      const qtyCell = document.createElement("td");
      const input = document.createElement("input");
      input.type = "number";
      input.min = "1";
      input.max = String(MAX_QUANTITY);
      input.value = String(qty);
      input.id = `qty-${id}`;
      input.dataset.testid = `qty-${id}`;
      input.setAttribute("aria-label", `Quantity of ${pizza.name}`);
      input.addEventListener("change", () => {
        const n = Number.parseInt(input.value, 10);
        if (Number.isFinite(n) && n >= 1) {
          cart.set(id, Math.min(n, MAX_QUANTITY));
        } else {
          cart.delete(id);
        }
        renderCart();
      });
      qtyCell.append(input);
      const price = document.createElement("td");
      price.textContent = money(pizza.price_cents * qty);
      const rm = document.createElement("td");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.dataset.testid = `remove-${id}`;
      remove.setAttribute("aria-label", `Remove ${pizza.name}`);
      remove.addEventListener("click", () => {
        cart.delete(id);
        renderCart();
      });
      rm.append(remove);
      tr.append(name, qtyCell, price, rm);
      body.append(tr);
    }
    $("cart-total").textContent = money(total);
    $("cart").hidden = cart.size === 0;
    $("cart-empty").hidden = cart.size > 0;
    $("place-order").disabled = cart.size === 0;
  }

  // ---- placing an order --------------------------------------------------------------------------------

  /** A fresh key per submit: a retried request of the same submit reuses it, a new submit does not. */
  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // crypto.randomUUID exists only in secure contexts (https, localhost); a workshop may serve the
    // UI on a LAN address over plain http, so build a v4 UUID from getRandomValues there.
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function orderBody() {
    const v = (id) => $(id).value.trim();
    return {
      customer: {
        name: v("customer-name"),
        phone: v("customer-phone"),
        address: {
          street: v("customer-street"),
          postal_code: v("customer-postal-code"),
          city: v("customer-city"),
        },
      },
      items: Array.from(cart, ([pizza, quantity]) => ({ pizza, quantity })),
    };
  }

  /** The form field a problem's JSON pointer names (`/customer/address/city` → `customer-city`). */
  function fieldFor(pointer) {
    const last = String(pointer || "").split("/").filter(Boolean).pop() || "";
    const el = $(`customer-${last.replace(/_/g, "-")}`);
    return el && el.form === $("order-form") ? el : null;
  }

  /** Marks the fields the API named, so a screen reader and the eye find them. */
  function markInvalid(errors) {
    for (const input of $("order-form").querySelectorAll("input")) input.removeAttribute("aria-invalid");
    let firstBad = null;
    for (const e of Array.isArray(errors) ? errors : []) {
      const input = fieldFor(e.field);
      if (!input) continue;
      input.setAttribute("aria-invalid", "true");
      firstBad = firstBad || input;
    }
    if (firstBad) firstBad.focus();
  }

  async function placeOrder(event) {
    event.preventDefault();
    clearNotice();
    markInvalid([]);
    if (cart.size === 0) {
      showInfo("Add a pizza from the menu first.");
      return;
    }
    const button = $("place-order");
    button.disabled = true;
    button.textContent = "Placing…";
    try {
      const key = newIdempotencyKey();
      const r = await api("POST", "/orders", { json: orderBody(), headers: { "Idempotency-Key": key } });
      if (!r.ok) {
        showProblem("The order was not placed", r.body, r.status);
        markInvalid(r.body && r.body.errors);
        return;
      }
      rememberCancelToken(r.body.order_id, r.body.cancel_token);
      cart.clear();
      renderCart();
      openOrder(r.body.order_id, { status: r.body.status, traceUrl: r.body.links && r.body.links.trace });
      loadRecent();
    } finally {
      button.textContent = "Place order";
      button.disabled = cart.size === 0;
    }
  }

  // ---- one order's timeline ----------------------------------------------------------------------------

  function closeCurrent() {
    if (!current) return;
    if (current.stream) current.stream.close();
    if (current.poll) clearTimeout(current.poll);
    current = null;
  }

  /** Shows an order and follows its events until it ends. */
  function openOrder(id, { status, traceUrl } = {}) {
    closeCurrent();
    current = { id, stream: null, seen: new Set(), poll: null, ended: false };
    $("order-section").hidden = false;
    $("order-id").textContent = id;
    $("order-section").dataset.orderId = id;
    $("timeline").replaceChildren();
    $("order-reason").textContent = "";
    $("progress-wrap").hidden = true;
    $("order-progress").value = 0;
    setStatus(status || "accepted");
    setTraceLink(traceUrl);
    // The GET also fills in what the POST did not say (the trace link when reopening, a reason).
    refreshOrder(id);
    follow(id);
    $("order-section").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function setStatus(status) {
    const el = $("order-status");
    el.textContent = label(status);
    el.dataset.status = status;
    el.className = `status status-${status}`;
    const cancel = $("cancel-order");
    const token = current ? cancelTokenFor(current.id) : null;
    cancel.disabled = TERMINAL.has(status) || !token;
    cancel.title = token ? "" : "Only the browser tab that placed this order can cancel it";
  }

  function setTraceLink(url) {
    const link = $("trace-link");
    if (!url) {
      link.hidden = true;
      return;
    }
    link.href = url;
    link.hidden = false;
  }

  async function refreshOrder(id) {
    const r = await api("GET", `/orders/${encodeURIComponent(id)}`);
    if (!current || current.id !== id) return null;
    if (!r.ok) {
      showProblem("Reading the order", r.body, r.status);
      return null;
    }
    const order = r.body;
    if (order.trace_url) setTraceLink(order.trace_url);
    for (const entry of order.timeline || []) addEntry(entry);
    setStatus(order.status);
    $("order-reason").textContent = order.reason ? `(${order.reason})` : "";
    return order;
  }

  /** Subscribes to the order's events; the browser resumes with Last-Event-ID after a dropped connection. */
  function follow(id) {
    if (typeof EventSource !== "function") {
      poll(id);
      return;
    }
    const stream = new EventSource(`/orders/${encodeURIComponent(id)}/events`);
    current.stream = stream;
    $("stream-state").textContent = "live";
    stream.addEventListener("status", (ev) => {
      if (!current || current.id !== id) return;
      let entry;
      try {
        entry = JSON.parse(ev.data);
      } catch {
        return;
      }
      addEntry(entry);
    });
    stream.addEventListener("end", () => {
      stream.close();
      if (!current || current.id !== id) return;
      current.ended = true;
      $("stream-state").textContent = "finished";
      refreshOrder(id);
      loadRecent();
    });
    stream.addEventListener("error", () => {
      if (!current || current.id !== id || current.ended) return;
      if (stream.readyState === EventSource.CLOSED) {
        // The server refused the stream (a 4xx, for example): fall back to asking now and then.
        $("stream-state").textContent = "polling";
        poll(id);
      } else {
        $("stream-state").textContent = "reconnecting…";
      }
    });
    stream.addEventListener("open", () => {
      if (current && current.id === id) $("stream-state").textContent = "live";
    });
  }

  async function poll(id) {
    const order = await refreshOrder(id);
    if (!current || current.id !== id) return;
    if (order && order.terminal) {
      $("stream-state").textContent = "finished";
      return;
    }
    current.poll = setTimeout(() => poll(id), 2000);
  }

  /** Appends one timeline entry (once per seq) and moves the status shown. */
  function addEntry(entry) {
    if (!current || !entry || current.seen.has(entry.seq)) return;
    current.seen.add(entry.seq);
    const li = document.createElement("li");
    li.dataset.testid = "timeline-entry";
    li.dataset.status = entry.status;
    li.dataset.seq = String(entry.seq);
    const time = document.createElement("time");
    time.dateTime = entry.at;
    time.textContent = clock(entry.at);
    const status = document.createElement("span");
    status.className = `status status-${entry.status}`;
    status.textContent = label(entry.status);
    li.append(time, " ", status);
    if (entry.event) {
      const ev = document.createElement("span");
      ev.className = "muted";
      ev.textContent = ` ${entry.event}`;
      li.append(ev);
    }
    if (entry.progress_percent !== null && entry.progress_percent !== undefined) {
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.dataset.testid = "progress-percent";
      pct.textContent = ` ${entry.progress_percent}%`;
      li.append(pct);
      $("progress-wrap").hidden = false;
      $("order-progress").value = Number(entry.progress_percent) || 0;
    }
    if (entry.status === "delivered" || entry.status === "completed") {
      $("order-progress").value = 100;
    }
    // Entries can arrive out of order (the GET and the stream overlap): keep them sorted by seq.
    const list = $("timeline");
    const after = Array.from(list.children).find((c) => Number(c.dataset.seq) > entry.seq);
    list.insertBefore(li, after || null);
    const last = list.lastElementChild;
    if (last) setStatus(last.dataset.status);
  }

  async function cancelOrder() {
    if (!current) return;
    const id = current.id;
    const token = cancelTokenFor(id);
    if (!token) {
      showInfo("Only the browser tab that placed this order can cancel it.");
      return;
    }
    const r = await api("POST", `/orders/${encodeURIComponent(id)}/cancel`, { json: { cancel_token: token } });
    if (!r.ok) {
      showProblem("The order was not cancelled", r.body, r.status);
      return;
    }
    showInfo("Cancellation requested: the timeline shows when the order stops.");
  }

  // ---- recent orders -----------------------------------------------------------------------------------

  async function loadRecent() {
    const r = await api("GET", "/orders?limit=20");
    if (!r.ok) {
      showProblem("Loading recent orders", r.body, r.status);
      return;
    }
    const list = $("recent-orders");
    list.replaceChildren();
    const orders = (r.body && r.body.orders) || [];
    $("recent-empty").hidden = orders.length > 0;
    for (const o of orders) {
      const li = document.createElement("li");
      li.dataset.testid = "recent-order";
      li.dataset.orderId = o.order_id;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.textContent = o.order_id.slice(0, 8);
      open.title = o.order_id;
      open.setAttribute("aria-label", `Open order ${o.order_id}`);
      open.addEventListener("click", () => openOrder(o.order_id, { status: o.status }));
      const status = document.createElement("span");
      status.className = `status status-${o.status}`;
      status.textContent = label(o.status);
      const meta = document.createElement("span");
      meta.className = "muted";
      meta.textContent = ` ${money(o.total_cents)} · ${clock(o.created_at)}`;
      li.append(open, " ", status, meta);
      list.append(li);
    }
  }

  // ---- workshop: faults --------------------------------------------------------------------------------

  function renderEdges() {
    const box = $("edges");
    box.replaceChildren();
    for (const edge of EDGES) {
      const id = `edge-${edge.replace(/[^a-z0-9]+/gi, "-")}`;
      const wrap = document.createElement("span");
      wrap.className = "check";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = id;
      input.value = edge;
      input.dataset.testid = id;
      const lab = document.createElement("label");
      lab.htmlFor = id;
      lab.textContent = edge;
      wrap.append(input, lab);
      box.append(wrap);
    }
  }

  function adminHeaders() {
    const token = $("admin-token").value.trim();
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage may be disabled (private mode); the token then lasts as long as the page.
    }
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  const faultsPath = () => `/admin/services/${encodeURIComponent($("fault-service").value)}/faults`;

  /** Fills the form from a plan; `raw` is the response text, read again for the exact 64-bit seed. */
  function fillPlan(plan, raw) {
    const set = (id, v) => {
      $(id).value = String(v ?? 0);
    };
    set("f-http-error-rate", plan.http_error_rate);
    set("f-http-latency-ms", plan.http_latency_ms);
    set("f-db-latency-ms", plan.db_latency_ms);
    set("f-kafka-publish-failure-rate", plan.kafka_publish_failure_rate);
    set("f-consumer-crash", plan.consumer_crash_before_commit);
    const business = plan.business_failure_rate || {};
    set("f-business-oven", business.oven);
    set("f-business-driver", business.driver);
    set("f-business-payment", business.payment);
    const edges = new Set(plan.drop_trace_context || []);
    for (const box of $("edges").querySelectorAll("input[type=checkbox]")) {
      box.checked = edges.has(box.value);
      edges.delete(box.value);
    }
    $("f-edges-other").value = Array.from(edges).join(", ");
    // JSON numbers above 2^53 lose digits in JavaScript; the seed is a u64, so take its digits as sent.
    const m = /"seed"\s*:\s*(\d+)/.exec(raw || "");
    $("f-seed").value = m ? m[1] : String(plan.seed ?? 0);
    $("faults-plan").textContent = raw ? JSON.stringify(plan, null, 2).replace(/"seed": \d+/, `"seed": ${$("f-seed").value}`) : "";
  }

  /** The plan in the form as JSON text, or a list of what is wrong with it. */
  function planJson() {
    const problems = [];
    const num = (id, name, { max, integer } = {}) => {
      const text = $(id).value.trim();
      const n = text === "" ? 0 : Number(text);
      if (!Number.isFinite(n) || n < 0 || (max !== undefined && n > max) || (integer && !Number.isInteger(n))) {
        problems.push({ field: name, message: `must be ${integer ? "a whole number" : "a number"} from 0${max !== undefined ? ` to ${max}` : ""}` });
      }
      return n;
    };
    const plan = {
      seed: "__SEED__",
      http_error_rate: num("f-http-error-rate", "http_error_rate", { max: 1 }),
      http_latency_ms: num("f-http-latency-ms", "http_latency_ms", { max: 60000, integer: true }),
      db_latency_ms: num("f-db-latency-ms", "db_latency_ms", { max: 60000, integer: true }),
      kafka_publish_failure_rate: num("f-kafka-publish-failure-rate", "kafka_publish_failure_rate", { max: 1 }),
      consumer_crash_before_commit: num("f-consumer-crash", "consumer_crash_before_commit", { max: 4294967295, integer: true }),
      business_failure_rate: {},
      drop_trace_context: [],
    };
    for (const kind of ["oven", "driver", "payment"]) {
      const n = num(`f-business-${kind}`, `business_failure_rate.${kind}`, { max: 1 });
      if (n > 0) plan.business_failure_rate[kind] = n;
    }
    for (const box of $("edges").querySelectorAll("input[type=checkbox]")) {
      if (box.checked) plan.drop_trace_context.push(box.value);
    }
    for (const edge of $("f-edges-other").value.split(",").map((s) => s.trim()).filter(Boolean)) {
      if (!plan.drop_trace_context.includes(edge)) plan.drop_trace_context.push(edge);
    }
    const seed = $("f-seed").value.trim() || "0";
    if (!/^\d{1,20}$/.test(seed) || BigInt(seed) > 18446744073709551615n) {
      problems.push({ field: "seed", message: "must be a whole number from 0 to 18446744073709551615" });
    }
    return { problems, text: JSON.stringify(plan).replace('"__SEED__"', seed) };
  }

  async function faultsCall(method, body) {
    clearNotice();
    const service = $("fault-service").value;
    $("faults-status").textContent = `${method} ${service}…`;
    const r = await api(method, faultsPath(), { json: body, headers: adminHeaders() });
    if (!r.ok) {
      $("faults-status").textContent = `${service}: failed (${r.status || "no answer"})`;
      showProblem(`Fault plan of ${service}`, r.body, r.status);
      return;
    }
    const verb = { GET: "loaded", PUT: "applied", DELETE: "cleared" }[method];
    $("faults-status").textContent = `${service}: plan ${verb} at ${clock(new Date().toISOString())}`;
    if (r.body && typeof r.body === "object") {
      fillPlan(r.body, r.text);
    } else {
      // A DELETE may answer without a body: the plan is now empty.
      fillPlan({}, "");
      $("faults-plan").textContent = "{}";
    }
  }

  function applyFaults(event) {
    event.preventDefault();
    const { problems, text } = planJson();
    if (problems.length > 0) {
      showProblem("The fault plan is not valid", { title: "Check these fields", errors: problems });
      return;
    }
    faultsCall("PUT", text);
  }

  // ---- start -------------------------------------------------------------------------------------------

  function start() {
    renderEdges();
    try {
      $("admin-token").value = localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      // No storage: the field starts empty.
    }
    $("order-form").addEventListener("submit", placeOrder);
    $("cancel-order").addEventListener("click", cancelOrder);
    $("refresh-orders").addEventListener("click", loadRecent);
    $("faults-form").addEventListener("submit", applyFaults);
    $("faults-load").addEventListener("click", () => faultsCall("GET"));
    $("faults-clear").addEventListener("click", () => faultsCall("DELETE"));
    $("fault-service").addEventListener("change", () => {
      $("faults-plan").textContent = "";
      $("faults-status").textContent = "";
    });
    window.addEventListener("beforeunload", closeCurrent);
    loadMenu();
    loadRecent();
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
