// The page's only way to the server: the public /v1 API, with the demo tenant's key.
// Also the visitor id this browser keeps, how both pages start, and a few DOM helpers.

const VISITOR_KEY = "fedpers.visitor";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** The demo configuration: key, tenant, purposes in plain words. */
async function loadConfig() {
  const response = await fetch("/demo/config.json", { cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, "the demo configuration is missing");
  return response.json();
}

function randomId() {
  // crypto.getRandomValues works outside secure contexts too (a LAN address over http).
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** This browser's random visitor id (kept so that consent can be recorded). */
function visitorId() {
  let id = localStorage.getItem(VISITOR_KEY);
  if (!id) {
    id = randomId();
    localStorage.setItem(VISITOR_KEY, id);
  }
  return id;
}

/** Forget the visitor id (after "delete my data") and start over with a new one. */
export function renewVisitorId() {
  localStorage.removeItem(VISITOR_KEY);
  return visitorId();
}

export class Api {
  constructor(config) {
    this.key = config.api_key;
    this.policyVersion = config.policy_version;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const problem = await response.json();
        detail = problem.detail || problem.title || detail;
      } catch {
        // not problem+json: keep the status line
      }
      throw new ApiError(response.status, detail);
    }
    const type = response.headers.get("Content-Type") || "";
    if (response.status === 204 || !type.includes("json")) return response;
    return response.json();
  }

  user(id) {
    return `/v1/users/${encodeURIComponent(id)}`;
  }

  consent(id) {
    return this.request("GET", `${this.user(id)}/consent`);
  }

  history(id) {
    return this.request("GET", `${this.user(id)}/consent/history`);
  }

  decide(id, action, purposes, source) {
    return this.request("POST", `${this.user(id)}/consent/${action}`, {
      purposes,
      policy_version: this.policyVersion,
      source,
    });
  }

  object(id, on, source) {
    const path = `${this.user(id)}/objection`;
    return on ? this.request("POST", path, { source }) : this.request("DELETE", path);
  }

  exportData(id) {
    return this.request("GET", `${this.user(id)}/export`);
  }

  erase(id) {
    return this.request("DELETE", this.user(id));
  }

  items(offset, limit, category) {
    const genre = category ? `&category=${encodeURIComponent(category)}` : "";
    return this.request("GET", `/v1/items?offset=${offset}&limit=${limit}${genre}`);
  }

  recommend(body) {
    return this.request("POST", "/v1/recommendations", body);
  }

  model() {
    return this.request("GET", "/v1/model");
  }

  async report() {
    const response = await fetch("/v1/model/report", {
      headers: { Authorization: `Bearer ${this.key}` },
    });
    if (!response.ok) throw new ApiError(response.status, "no audit report for this model yet");
    return response.blob();
  }
}

/** Whether a consent view lets the server personalise (the API's own rule, for the UI). */
export function mayPersonalise(view, config) {
  const granted = new Set(view.granted);
  return (
    config.personalisation_purposes.every((p) => granted.has(p)) &&
    !view.objection &&
    !view.gpc &&
    !view.erased
  );
}

/** A new element: el("p", {class: "x"}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Show how to enable the demo when the server was started without --demo. */
function showDemoOff(config) {
  const box = document.getElementById("demo-off");
  box.replaceChildren(
    el("h2", {}, "The demo is not enabled on this server"),
    el(
      "p",
      {},
      "These pages need a demo key. Start the server with ",
      el("code", {}, config ? config.enable_hint : "fedpers serve --run RUN_DIR --demo"),
      " and reload this page.",
    ),
  );
  box.hidden = false;
}

/**
 * How both pages start: the demo configuration, an API client with its key and this
 * browser's visitor id, as { config, api, user }. Without the demo (the server runs
 * without --demo, or its configuration cannot be read) it shows how to enable it instead
 * and returns null.
 */
export async function startDemo() {
  let config = null;
  try {
    config = await loadConfig();
  } catch {
    // handled below: no config means no demo
  }
  if (!config || !config.demo) {
    showDemoOff(config);
    return null;
  }
  return { config, api: new Api(config), user: visitorId() };
}

/** Save a blob as a file the visitor downloads. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
