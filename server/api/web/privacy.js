// Privacy center: consent per purpose, objection, the GPC signal the browser sent, the
// model's privacy guarantee in plain words, download and delete my data, consent history.

import { ApiError, el, renewVisitorId, saveBlob, startDemo } from "./api.js";

const SOURCE = "web-privacy-center";
const state = { config: null, api: null, user: null, view: null };
const $ = (id) => document.getElementById(id);

function say(message) {
  $("status").textContent = message;
}

function purposeLabel(id) {
  const purpose = state.config.purposes.find((p) => p.id === id);
  return purpose ? `${purpose.label} (${purpose.name})` : `P${id}`;
}

function renderPurposes() {
  const box = $("purposes");
  const rows = state.config.purposes.map((p) => {
    const id = `purpose-${p.id}`;
    const input = el("input", {
      type: "checkbox",
      role: "switch",
      id,
      "data-purpose": p.id,
      "aria-describedby": `${id}-help`,
    });
    input.checked = state.view.granted.includes(p.id);
    input.addEventListener("change", () => decide(p, input));
    return el(
      "div",
      { class: "switch-row" },
      input,
      el("label", { for: id }, el("span", { class: "purpose-id" }, p.label), ` ${p.name}`),
      el("p", { id: `${id}-help`, class: "muted" }, `Lets this service ${p.explanation}.`),
    );
  });
  box.replaceChildren(box.querySelector("legend"), ...rows);
  $("objection").checked = Boolean(state.view.objection);
}

function renderGpc() {
  const on = Boolean(state.view.gpc);
  document.body.dataset.gpc = String(on);
  $("gpc-state").replaceChildren(
    el("strong", {}, on ? "Your browser sent Global Privacy Control (Sec-GPC: 1)." : "Your browser did not send Global Privacy Control."),
    " ",
    on
      ? "We honour it: nothing is personalised with what you do here and nothing derived from it is shared, whatever you granted above."
      : "If you turn it on in your browser, we stop personalising and sharing, whatever you granted above.",
  );
}

function fmt(number) {
  if (number === null || number === undefined) return "unknown";
  return Math.abs(number) >= 0.01 ? number.toPrecision(3) : number.toExponential(1);
}

function unitPhrase(unit) {
  if (unit === "user") return "everything one person contributed (all of their interactions)";
  if (unit === "record" || unit === "event" || unit === "interaction") return "any single interaction of a person";
  return unit ? `one ${unit}` : "one contribution";
}

export function guaranteeText(privacy) {
  if (!privacy || privacy.epsilon === null || privacy.epsilon === undefined || !Number.isFinite(privacy.epsilon)) {
    return "This model was trained without differential privacy: it comes with no formal privacy guarantee.";
  }
  const factor = Math.exp(privacy.epsilon);
  const times =
    factor < 10
      ? fmt(factor)
      : factor < 1e6
        ? Math.round(factor).toLocaleString("en")
        : new Intl.NumberFormat("en", { notation: "compact", compactDisplay: "long", maximumSignificantDigits: 2 }).format(factor);
  return (
    `This model was trained with differential privacy that protects ${unitPhrase(privacy.unit)}. ` +
    `Adding or removing that changes the chance of any training result by at most a factor of ${times} ` +
    `(ε = ${fmt(privacy.epsilon)}), except with probability δ = ${fmt(privacy.delta)}. A smaller ε means stronger protection.`
  );
}

async function renderModel() {
  try {
    const model = await state.api.model();
    $("model-guarantee").textContent = guaranteeText(model.privacy);
    const facts = [
      ["Model version", String(model.version)],
      ["Training round", String(model.round)],
      ["Unit of privacy", model.privacy && model.privacy.unit ? model.privacy.unit : "none"],
      ["ε (epsilon)", model.privacy ? fmt(model.privacy.epsilon) : "none"],
      ["δ (delta)", model.privacy ? fmt(model.privacy.delta) : "none"],
    ];
    const privacy = model.privacy || {};
    if (privacy.label) facts.push(["Training", privacy.label]);
    if (privacy.mechanism) facts.push(["Mechanism", privacy.mechanism]);
    if (privacy.accountant) facts.push(["Accountant", privacy.accountant]);
    if (privacy.secure_aggregation) facts.push(["Secure aggregation", privacy.secure_aggregation]);
    if (model.created_at) facts.push(["Published", new Date(model.created_at * 1000).toLocaleString()]);
    $("model-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  } catch (error) {
    $("model-guarantee").textContent = `No model is served yet (${error.message}).`;
  }
}

function renderHistory(entries) {
  const body = $("history").querySelector("tbody");
  body.replaceChildren(
    ...entries.map((e) =>
      el(
        "tr",
        {},
        el("td", {}, new Date(e.at * 1000).toLocaleString()),
        el("td", {}, e.action),
        el("td", {}, (e.purposes || []).map((p) => `P${p}`).join(", ") || "–"),
        el("td", {}, e.source || "–"),
      ),
    ),
  );
  $("history-wrap").hidden = entries.length === 0;
  $("history-empty").hidden = entries.length !== 0;
  document.body.dataset.historyCount = String(entries.length);
}

async function refresh() {
  state.view = await state.api.consent(state.user);
  if (state.view.erased) {
    state.user = renewVisitorId();
    state.view = await state.api.consent(state.user);
  }
  $("visitor-id").textContent = state.user;
  renderPurposes();
  renderGpc();
  const history = await state.api.history(state.user);
  renderHistory(history.entries);
  document.body.dataset.ready = "true";
}

async function decide(purpose, input) {
  const action = input.checked ? "grant" : "withdraw";
  input.disabled = true;
  try {
    state.view = await state.api.decide(state.user, action, [purpose.id], SOURCE);
    if (!state.view.granted.includes(1)) sessionStorage.removeItem("fedpers.session");
    say(`${purpose.label} ${action === "grant" ? "granted" : "withdrawn"}: ${purpose.name}.`);
  } catch (error) {
    input.checked = !input.checked;
    say(`Could not record your choice: ${error.message}`);
  } finally {
    input.disabled = false;
  }
  await refresh();
}

async function toggleObjection() {
  const on = $("objection").checked;
  try {
    await state.api.object(state.user, on, SOURCE);
    say(on ? "Objection to profiling recorded." : "Objection to profiling lifted.");
  } catch (error) {
    say(`Could not record your objection: ${error.message}`);
  }
  await refresh();
}

async function downloadData() {
  const data = await state.api.exportData(state.user);
  saveBlob(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }), `fedpers-data-${state.user}.json`);
  say("Your data was downloaded as a JSON file.");
}

async function deleteData() {
  const old = state.user;
  const receipt = await state.api.erase(old);
  sessionStorage.clear();
  state.user = renewVisitorId();
  await refresh();
  const what = receipt && typeof receipt.ledger_entries_shredded === "number"
    ? ` (${receipt.consent_rows} consent record${receipt.consent_rows === 1 ? "" : "s"} removed, ${receipt.ledger_entries_shredded} history entries shredded)`
    : "";
  say(`Deleted${what}: the server holds nothing about ${old} any more and refuses new records for it. This browser now uses a new visitor id.`);
}

async function downloadReport(event) {
  event.preventDefault();
  try {
    saveBlob(await state.api.report(), "fedpers-audit-report.html");
    $("report-status").textContent = "";
  } catch (error) {
    $("report-status").textContent = error instanceof ApiError && error.status === 404
      ? " (not written yet: run fedpers audit RUN_DIR on the server)"
      : ` (${error.message})`;
  }
}

async function main() {
  const demo = await startDemo();
  if (!demo) return;
  Object.assign(state, demo); // config, api, user
  $("objection").addEventListener("change", () => toggleObjection().catch((e) => say(e.message)));
  $("download-data").addEventListener("click", () => downloadData().catch((e) => say(`Download failed: ${e.message}`)));
  const dialog = $("confirm-delete");
  $("delete-data").addEventListener("click", () => {
    dialog.returnValue = "";
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "delete") deleteData().catch((e) => say(`Deletion failed: ${e.message}`));
    $("delete-data").focus();
  });
  $("report-link").addEventListener("click", downloadReport);
  await Promise.all([refresh(), renderModel()]);
}

main().catch((error) => say(`Something went wrong: ${error.message}`));
