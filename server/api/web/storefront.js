// Storefront demo: the catalogue, a "recommended for you" row and why each title is there.
// What the visitor opens stays in this tab (sessionStorage only once P1 is granted) and is
// sent with a request for recommendations only while personalisation is allowed.

import { ApiError, el, mayPersonalise, renewVisitorId, startDemo } from "./api.js";

const SESSION_KEY = "fedpers.session";
const PAGE_SIZE = 24;
const ROW_SIZE = 6;
const MAX_EVENTS = 20;
const MAX_INDEXED = 5000;

const state = {
  config: null,
  api: null,
  user: null,
  view: null,
  events: [],
  titles: new Map(),
  categories: new Map(),
  offset: 0,
  total: 0,
  seq: 0,
  promptDismissed: false,
  genre: "",
};

const $ = (id) => document.getElementById(id);

function mayStore() {
  return state.view !== null && state.view.granted.includes(1) && !state.view.erased;
}

function keepSession() {
  if (mayStore()) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ events: state.events, titles: [...state.titles] }));
  } else {
    sessionStorage.removeItem(SESSION_KEY);
  }
}

function restoreSession() {
  if (!mayStore()) {
    sessionStorage.removeItem(SESSION_KEY); // P1 withdrawn elsewhere: keep nothing
    return;
  }
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved) {
      state.events = saved.events || [];
      state.titles = new Map(saved.titles || []);
    }
  } catch {
    sessionStorage.removeItem(SESSION_KEY);
  }
}

function genres(categories) {
  return categories.length ? categories.join(", ") : "No genre listed";
}

function genresOf(item) {
  return state.categories.has(item) ? genres(state.categories.get(item)) : "";
}

function openButton(item, title) {
  const button = el("button", { type: "button", class: "open", "data-item": item, "aria-label": `Open ${title}` }, "Open");
  button.addEventListener("click", () => openItem(item, title));
  return button;
}

function itemCard(entry) {
  return el(
    "li",
    { class: "card", "data-item": entry.item },
    el("h3", {}, entry.title),
    el("p", { class: "genres" }, genres(entry.categories)),
    openButton(entry.item, entry.title),
  );
}

// The server names the opened title behind a recommendation by its id; show its title.
function explanationText(text) {
  if (!text) return "The server gave no explanation for this title.";
  const match = /^(because you interacted with )(.+)$/.exec(text);
  return match && state.titles.has(match[2]) ? `${match[1]}${state.titles.get(match[2])}` : text;
}

function recCard(rec) {
  const title = rec.title || rec.item;
  const why = el(
    "details",
    { class: "why" },
    el("summary", {}, "Why this?"),
    el("p", {}, explanationText(rec.explanation)),
  );
  return el(
    "li",
    { class: "card rec", "data-item": rec.item },
    el("h3", {}, title),
    rec.explored ? el("p", { class: "tag" }, "Something new: picked to explore") : null,
    el("p", { class: "genres", "data-genres-of": rec.item }, genresOf(rec.item)),
    why,
    openButton(rec.item, title),
  );
}

function missingPurposes() {
  const granted = new Set(state.view.granted);
  return state.config.purposes.filter((p) => state.config.personalisation_purposes.includes(p.id) && !granted.has(p.id));
}

function withheldNote() {
  if (!state.events.length || mayPersonalise(state.view, state.config)) return "";
  if (state.view.gpc) return "What you opened stays in this tab: your browser sent Global Privacy Control.";
  if (state.view.objection) return "What you opened stays in this tab: you object to profiling.";
  const missing = missingPurposes().map((p) => p.label).join(", ");
  return `What you opened stays in this tab: ${missing} ${missingPurposes().length > 1 ? "are" : "is"} not granted.`;
}

function renderBanner(response) {
  const banner = $("rec-banner");
  const headline = response.personalised ? "Personalised for you." : "Not personalised.";
  const note = withheldNote();
  const reason = /[.!?]$/.test(response.reason) ? response.reason : `${response.reason}.`;
  const parts = [el("strong", {}, headline), " ", el("span", { class: "reason" }, reason)];
  if (note) parts.push(" ", el("span", { class: "note" }, note));
  banner.replaceChildren(...parts);
  banner.dataset.basis = response.basis;
  banner.dataset.personalised = String(response.personalised);
  banner.classList.toggle("banner-on", response.personalised);
  banner.classList.toggle("banner-off", !response.personalised);
}

async function refreshRecommendations() {
  const seq = ++state.seq;
  const row = $("rec-row");
  row.setAttribute("aria-busy", "true");
  const body = {
    user_id: state.user,
    k: ROW_SIZE,
    explain: true,
    context: {
      device: window.matchMedia("(max-width: 40rem)").matches ? "mobile" : "desktop",
      hour: new Date().getHours(),
      locale: navigator.language || "en",
    },
  };
  const opened = [...new Set(state.events.map((e) => e.item))];
  if (opened.length) body.filters = { exclude_items: opened };
  if (opened.length && mayPersonalise(state.view, state.config)) {
    body.personal_state = { events: state.events };
  }
  try {
    const response = await state.api.recommend(body);
    if (seq !== state.seq) return; // a newer request is on its way
    renderBanner(response);
    row.replaceChildren(...response.items.map(recCard));
  } catch (error) {
    if (seq !== state.seq) return;
    $("rec-banner").textContent = `No recommendations right now: ${error.message}`;
    row.replaceChildren();
  } finally {
    if (seq === state.seq) {
      row.removeAttribute("aria-busy");
      document.body.dataset.recSeq = String(seq);
    }
  }
}

function renderSession() {
  const list = $("session-list");
  list.replaceChildren(...state.events.map((e) => el("li", {}, state.titles.get(e.item) || e.item)));
  $("clear-session").hidden = state.events.length === 0;
  const where = mayStore() ? "kept in this tab until you close it" : "kept in this page's memory only (P1 is not granted)";
  $("session-note").textContent = state.events.length
    ? `Only this browser knows what you opened: ${where}.`
    : "Open a few titles and watch the recommendations change.";
}

function openItem(item, title) {
  state.titles.set(item, title);
  state.events.push({ item, kind: "click", at: Date.now() / 1000 });
  state.events = state.events.slice(-MAX_EVENTS);
  keepSession();
  renderSession();
  refreshRecommendations();
}

function renderGenres(names) {
  const select = $("genre");
  if (select.options.length > 1 || !names) return;
  select.append(...names.map((name) => el("option", { value: name }, name)));
}

// Genres of every title (public catalogue data), so that recommended cards show theirs.
async function indexGenres() {
  const limit = 1000;
  for (let offset = 0; offset < MAX_INDEXED; offset += limit) {
    const page = await state.api.items(offset, limit);
    for (const entry of page.items) state.categories.set(entry.item, entry.categories);
    if (offset + limit >= page.total) break;
  }
  for (const node of document.querySelectorAll("[data-genres-of]")) {
    node.textContent = genresOf(node.dataset.genresOf);
  }
}

async function loadItems() {
  const page = await state.api.items(state.offset, PAGE_SIZE, state.genre);
  renderGenres(page.categories);
  state.total = page.total;
  state.offset += page.items.length;
  for (const entry of page.items) state.categories.set(entry.item, entry.categories);
  $("catalogue").append(...page.items.map(itemCard));
  const where = state.genre ? ` in ${state.genre}` : "";
  $("catalogue-count").textContent = `Showing ${state.offset} of ${state.total} titles${where}.`;
  $("more-items").hidden = state.offset >= state.total;
}

function renderPrompt() {
  const undecided = !state.view.updated_at && !state.view.gpc;
  $("consent-prompt").hidden = state.promptDismissed || !undecided;
}

async function grantPersonalisation() {
  state.view = await state.api.decide(state.user, "grant", state.config.personalisation_purposes, "web-storefront");
  state.promptDismissed = true;
  renderPrompt();
  keepSession();
  renderSession();
  await refreshRecommendations();
}

async function loadConsent() {
  state.view = await state.api.consent(state.user);
  if (state.view.erased) {
    // this id was deleted: never reuse it
    state.user = renewVisitorId();
    state.view = await state.api.consent(state.user);
  }
}

async function main() {
  const demo = await startDemo();
  if (!demo) {
    $("rec-banner").textContent = "Recommendations appear here once the demo is enabled.";
    return;
  }
  Object.assign(state, demo); // config, api, user
  $("grant-personalisation").addEventListener("click", () => grantPersonalisation().catch(showError));
  $("dismiss-consent").addEventListener("click", () => {
    state.promptDismissed = true;
    renderPrompt();
  });
  $("clear-session").addEventListener("click", () => {
    state.events = [];
    keepSession();
    renderSession();
    refreshRecommendations();
  });
  $("more-items").addEventListener("click", () => loadItems().catch(showError));
  $("genre").addEventListener("change", () => {
    state.genre = $("genre").value;
    state.offset = 0;
    $("catalogue").replaceChildren();
    loadItems().catch(showError);
  });
  await loadConsent();
  restoreSession();
  renderPrompt();
  renderSession();
  await Promise.all([loadItems(), refreshRecommendations()]);
  indexGenres().catch(() => {}); // only cosmetic: cards without genres still work
}

function showError(error) {
  const message = error instanceof ApiError ? error.message : String(error);
  $("rec-banner").textContent = `Something went wrong: ${message}`;
}

main().catch(showError);
