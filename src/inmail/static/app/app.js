// The reference web client: sign in with a token, compose (an InMail, or a free message to a
// connection), inbox, sent box, threads, notifications, live balance, buying credits. Every piece of data reaches the page as textContent.
import { Api, ApiError, UNREACHABLE } from "/static/app/api.js";

const TOKEN_KEY = "inmail.token";

const REASONS = {
  INVALID_INPUT: "Something in the request is not valid.",
  NOT_FOUND: "There is no member with that id.",
  CANNOT_MESSAGE_SELF: "You cannot send an InMail to yourself.",
  RECIPIENT_IS_CONNECTION: "You are connected: your message goes free, in your thread with them (no subject).",
  NOT_CONNECTED: "You can only message your connections.",
  UPGRADE_REQUIRED: "Your plan cannot send InMail: upgrade to a Premium plan.",
  SUBSCRIPTION_INACTIVE: "Your subscription is cancelled.",
  PAYMENT_METHOD_EXPIRED: "Your card has expired: add a payment method.",
  AWAITING_RESPONSE: "Your last InMail to this member is still waiting for a response.",
  INSUFFICIENT_CREDITS: "You have no InMail credits left.",
  NOT_RECIPIENT: "Only the recipient can respond.",
  ALREADY_RESPONDED: "This InMail already has a response.",
  PURCHASE_NOT_ALLOWED: "Your plan cannot buy credits.",
  CAP_EXCEEDED: "That would take you over your plan's credit cap.",
  IDEMPOTENCY_KEY_REUSED: "That request was already made differently.",
  RATE_LIMITED: "Too many at once: wait a minute.",
  PAYMENT_DECLINED: "The card was declined.",
  PLAN_NOT_AVAILABLE: "That plan is not available.",
};

const RESPONSES = [
  ["INTERESTED", "Interested"],
  ["MAYBE_LATER", "Maybe later"],
  ["NOT_INTERESTED", "Not interested"],
];

const CONVERSATION_FIELDS = `
  id kind subject state response creditedBack sentAt respondedAt
  sender { id name } recipient { id name }
  messages { id body sentAt author { id name } }
`;

const $ = (id) => document.getElementById(id);

// An element with attributes and children; strings become text nodes, never markup.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Text a member wrote (a name, a subject, a body), set apart from what is around it: its own
// direction characters (a right-to-left override, an unclosed isolate) reorder it alone, never
// the sender, state or date beside it. <bdi> takes its direction from its own letters.
function theirs(text) {
  return el("bdi", {}, text);
}

// A message of the page's own in the status line, in place of any outage message there (which
// would otherwise clear it once the service is back).
function say(text) {
  delete $("status").dataset.unreachable;
  $("status").textContent = text || "";
}

// The server words every refusal (with its figures: a cap, a wait); the table words only the
// compose window's reason, which comes as a code alone.
function reasonOf(code, message) {
  return message || REASONS[code] || code || "";
}

function userErrors(errors) {
  return errors.map((e) => reasonOf(e.code, e.message)).join(" ");
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

let api = null;
let viewer = null;
let stopLive = [];
// The Api just signed in, or whose connection came back, whose lists load again once its
// subscriptions are live (null: none waiting).
let reloadWhenLive = null;
// Whether the server ended the balance's subscription (it is then not sent again on a new
// connection, and no first update can say that the subscriptions are live).
let balanceEnded = false;
// How long a reconnected page waits for the balance's first update before it reloads anyway.
const LIVE_WAIT_MS = 5000;
// The outage message of a response, by conversation id: the inbox is drawn anew on every live
// update and after a reconnect, and the message outlives that.
const respondNotes = new Map();

// What an answer that could not be had means for each action: a send or a purchase under an
// idempotency key may or may not have happened, and repeating it is safe only as the same
// request, so the member is told what to check first.
const UNREACHABLE_TEXT = {
  send: "Could not reach the service: the InMail may or may not have been sent. Check your sent box before sending it again.",
  buy: "Could not reach the service: the purchase may or may not have gone through. Check your balance before trying again.",
  respond: "Could not reach the service: your response may or may not have been recorded. Check your inbox before trying again.",
  read: "Could not reach the service: the notifications may not have been marked read.",
  load: "Could not reach the service: what is shown may be out of date. It reloads once the service is back.",
  signin: "Could not reach the service. Try again once it is back.",
  resume: "Could not reach the service: you will be signed in again as soon as it is back.",
};

// These say how things stand now (what is shown may be out of date; not signed in yet), so
// they clear once the page is live and has loaded everything again. The others are about a
// request that got no answer, whose outcome the service coming back does not tell: they stay,
// with the time the request was made, until the member dismisses them or does the next action
// of that kind.
const UNTIL_BACK = new Set(["load", "signin", "resume"]);

function isUnreachable(error) {
  return error instanceof ApiError && error.code === UNREACHABLE;
}

// Shows an outage message in `element` (the status line when none). `at` is when the request
// was made (the error's); `onDismiss` hears the member dismiss it.
function sayUnreachable(action, element = $("status"), at = new Date(), onDismiss = null) {
  const text = UNREACHABLE_TEXT[action] || UNREACHABLE_TEXT.load;
  element.dataset.unreachable = action;
  if (UNTIL_BACK.has(action)) {
    element.textContent = text;
    return;
  }
  const dismiss = () => {
    clearNotice(element);
    if (onDismiss) onDismiss();
  };
  element.replaceChildren(
    text,
    " (tried at ",
    el("time", { datetime: at.toISOString(), "data-testid": "unreachable-at" }, at.toLocaleString()),
    ") ",
    el("button", { type: "button", "data-testid": "dismiss", onclick: dismiss }, "Dismiss")
  );
}

function clearNotice(element) {
  element.replaceChildren();
  delete element.dataset.unreachable;
}

// Every outage message (`all`), or only those that the page being live and loaded again answers.
function clearUnreachable(all = true) {
  for (const element of document.querySelectorAll("[data-unreachable]")) {
    if (all || UNTIL_BACK.has(element.dataset.unreachable)) clearNotice(element);
  }
  if (all) respondNotes.clear();
}

async function signIn(token) {
  const candidate = new Api(token);
  const data = await candidate.request(`{
    viewer { id name ${PLAN_FIELDS} inmailBalance }
  }`);
  if (!data.viewer) throw new ApiError("That token is not a member's (an admin has no inbox).");
  resetMemberState();
  api = candidate;
  viewer = data.viewer;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("viewer-name").textContent = viewer.name;
  $("viewer-id").textContent = viewer.id;
  showPlan(viewer);
  showBalance(viewer.inmailBalance);
  // The lists show at once, and are loaded once more when the subscriptions are live (see
  // goLive): an event committed between this load and then would otherwise show only with
  // the next one.
  reloadWhenLive = api;
  goLive();
  await Promise.all([loadInbox(), loadSent(), loadNotifications()]);
}

function signOut() {
  stopLive.forEach((stop) => stop());
  stopLive = [];
  reloadWhenLive = null;
  if (api) api.close();
  api = null;
  viewer = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  resetMemberState();
  say("Signed out.");
}

// Everything the page shows or holds for one member, back to how a fresh page has it: the next
// member to sign in (in this tab) sees nothing of the previous one's.
function resetMemberState() {
  composeTo = null;
  lookedUp = null;
  showComposeKind(false);
  replyDrafts.clear();
  wholeThreads.clear();
  readingThreads.clear();
  for (const id of ["token-input", "compose-recipient", "compose-subject", "compose-body"]) $(id).value = "";
  $("buy-quantity").value = "1";
  $("compose-recipient-name").textContent = "nobody yet";
  $("compose-credits").textContent = "?";
  delete $("compose-credits").dataset.known;
  $("compose-reason").textContent = "";
  delete $("compose-reason").dataset.reason;
  for (const id of ["compose-result", "buy-result", "notifications-result", "buy-price", "viewer-name", "viewer-id", "viewer-plan"]) {
    $(id).textContent = "";
  }
  $("compose-send").disabled = true;
  $("balance").textContent = "?";
  delete $("balance").dataset.balance;
  $("live-status").dataset.state = "connecting";
  $("live-status").textContent = "connecting...";
  showUnread(0);
  for (const id of Object.keys(LISTS)) resetList(id);
  clearUnreachable();
}

function showBalance(balance) {
  $("balance").textContent = String(balance);
  $("balance").dataset.balance = String(balance);
}

const PLAN_FIELDS = `
  plan { type canSendInMail canPurchaseCredits creditPrice { amount currency } }
  subscription { status }
`;

// The plan, and whether its subscription is cancelled (a cancelled one buys nothing).
function showPlan(member) {
  const cancelled = member.subscription && member.subscription.status === "CANCELED";
  $("viewer-plan").textContent = member.plan.type + (cancelled ? " (subscription cancelled)" : "");
  $("viewer-plan").dataset.status = member.subscription ? member.subscription.status : "NONE";
  showPrice(member.plan, cancelled);
}

// Cancelling, changing plan and a new subscription each show as a balance change (credits
// forfeited or granted): the plan is read again then.
async function refreshPlan() {
  const mine = api;
  const data = await api.request(`{ viewer { ${PLAN_FIELDS} } }`);
  if (api !== mine || !data.viewer) return;
  Object.assign(viewer, data.viewer);
  showPlan(viewer);
}

function showPrice(plan, cancelled = false) {
  const price = plan.creditPrice;
  const canBuy = plan.canPurchaseCredits && !cancelled;
  $("buy-price").textContent = canBuy && price
    ? `One credit costs ${(price.amount / 100).toFixed(2)} ${price.currency}.`
    : cancelled ? REASONS.SUBSCRIPTION_INACTIVE : REASONS.PURCHASE_NOT_ALLOWED;
  $("buy-credits").disabled = !canBuy;
}

function setLiveState(state) {
  if (state === "refused") {
    signOut();
    say("Signed out: the token was refused or has expired. Sign in with a new one.");
    return;
  }
  if (state === "reconnected") {
    // Back after an outage: what happened meanwhile was not replayed, so it is all loaded again,
    // but only once the subscriptions are live on the server again (see goLive): an event
    // committed after a read made before that would otherwise show only with the next one.
    state = "connected";
    const owner = api;
    reloadWhenLive = owner;
    if (balanceEnded) reloadIfWaiting(owner);
    else setTimeout(() => reloadIfWaiting(owner), LIVE_WAIT_MS);
  }
  $("live-status").dataset.state = state;
  $("live-status").textContent = state === "connected" ? "live" : state + "...";
}

// The subscriptions go out on every connection in the order made here, the balance last. The
// server starts a subscription to the balance with the balance as of now, read once it is
// registered, so the first balance update on a new connection says the server has that
// subscription, and has received the ones sent before it (it reads a socket's messages in
// order): only then are the lists loaded again after a reconnect, so an event committed after
// that load's reads arrives live. The balance needs no reload: that
// first update is the balance as of now, and no older answer over HTTP can come after it.
function goLive() {
  const owner = api;
  balanceEnded = false;
  api.connect(setLiveState);
  const failed = (what) => (message) => say(`Live ${what}: ${message}`);
  const live = () => reloadIfWaiting(owner);
  stopLive.push(
    api.subscribe(
      "subscription { conversationUpdated { kind conversation { id sender { id } } } }",
      (data) => {
        const conversation = data.conversationUpdated.conversation;
        const mine = conversation.sender.id === viewer.id;
        (mine ? loadSent() : loadInbox()).catch(showError);
      },
      failed("conversations")
    ),
    api.subscribe(
      "subscription { notificationReceived { id kind } }",
      () => loadNotifications().catch(showError),
      failed("notifications")
    ),
    api.subscribe(
      "subscription { balanceChanged { balance delta reason at } }",
      (data) => {
        showBalance(data.balanceChanged.balance);
        if (["FORFEIT", "GRANT"].includes(data.balanceChanged.reason) && data.balanceChanged.delta !== 0) {
          refreshPlan().catch(showError);
        }
        if ($("compose-credits").dataset.known) $("compose-credits").textContent = String(data.balanceChanged.balance);
        // Whether the viewer may send can change with the balance: asked again.
        if (lookedUp && lookedUp === $("compose-recipient").value.trim()) lookUp(lookedUp).catch(showError);
        live();
      },
      (message) => {
        failed("balance")(message);
        live(); // no balance to wait for: load the lists all the same
      },
      () => {
        if (api === owner) balanceEnded = true;
      }
    )
  );
}

// The lists loaded again, if `owner` still waits for that (see goLive).
function reloadIfWaiting(owner) {
  if (reloadWhenLive !== owner) return;
  reloadWhenLive = null;
  reloadAll().catch(showError);
}

async function reloadAll() {
  const mine = api;
  await Promise.all([loadInbox(), loadSent(), loadNotifications()]);
  if (api === mine) clearUnreachable(false); // what is shown is up to date again
}

function showError(error) {
  if (isUnreachable(error)) {
    sayUnreachable(api ? "load" : "signin", $("status"), error.at);
    return;
  }
  if (error instanceof ApiError && error.code === "UNAUTHENTICATED") {
    signOut();
    say(`Signed out: ${error.message}`);
    return;
  }
  say(error instanceof Error ? error.message : String(error));
}

// Compose: who, whether the viewer may send, then send with a fresh key per attempt. The send
// goes to the member looked up, and only while the field still holds that member's id: editing
// it forgets the look-up (the button is off until the new id is looked up).
let composeTo = null;
let composeFree = false; // the member looked up is a connection: a free message, no InMail
let lookedUp = null; // the id last looked up, to look up again when the balance changes

function showComposeKind(free) {
  composeFree = free;
  $("compose-send").textContent = free ? "Send message (free)" : "Send InMail";
  $("compose-subject").disabled = free;
}

function forgetLookUp() {
  composeTo = null;
  lookedUp = null;
  showComposeKind(false);
  $("compose-send").disabled = true;
  $("compose-recipient-name").textContent = "nobody yet";
  $("compose-reason").textContent = "";
  delete $("compose-reason").dataset.reason;
}

let lookUps = 0; // the latest look-up's number: an older one's answer is not shown

async function lookUp(recipientId) {
  const asked = ++lookUps;
  composeTo = null;
  lookedUp = recipientId;
  $("compose-send").disabled = true;
  $("compose-reason").textContent = "";
  // A send that got no answer stays said: looking someone up is no answer to it.
  if (!$("compose-result").dataset.unreachable) $("compose-result").textContent = "";
  const mine = api;
  const data = await api.request(
    `query Compose($id: ID!) {
      member(id: $id) { id name headline }
      compose(recipientId: $id) { canSend reason creditsLeft recipientIsConnection retryAfterSeconds }
    }`,
    { id: recipientId }
  );
  if (api !== mine) return; // signed out (or someone else signed in) meanwhile
  if ($("compose-recipient").value.trim() !== recipientId) return; // edited meanwhile
  if (asked !== lookUps) return; // a later look-up's answer is the one to show
  const compose = data.compose;
  $("compose-recipient-name").textContent = data.member ? data.member.name : "no such member";
  $("compose-credits").textContent = String(compose.creditsLeft);
  $("compose-credits").dataset.known = "1";
  const wait = compose.reason === "RATE_LIMITED" ? compose.retryAfterSeconds : null;
  $("compose-reason").textContent = compose.canSend ? ""
    : wait ? `You have sent as many InMails as a minute allows: you can send again in ${wait} s.`
    : reasonOf(compose.reason);
  $("compose-reason").dataset.reason = compose.reason || "";
  showComposeKind(compose.reason === "RECIPIENT_IS_CONNECTION");
  if (compose.canSend || composeFree) {
    composeTo = recipientId;
    $("compose-send").disabled = false;
  }
  if (wait) {
    // Asked again once the wait is over, if this is still the look-up shown.
    setTimeout(() => {
      if (asked === lookUps && api === mine && $("compose-recipient").value.trim() === recipientId) {
        lookUp(recipientId).catch(showError);
      }
    }, wait * 1000);
  }
}

async function send() {
  if (!composeTo || $("compose-recipient").value.trim() !== composeTo) return;
  if (composeFree) return sendFree();
  const button = $("compose-send");
  button.disabled = true;
  clearNotice($("compose-result"));
  const input = {
    recipientId: composeTo,
    subject: $("compose-subject").value,
    body: $("compose-body").value,
    idempotencyKey: newKey(),
  };
  const mine = api;
  try {
    const data = await api.request(
      `mutation Send($input: SendInMailInput!) {
        sendInMail(input: $input) {
          creditsLeft conversation { id subject state } errors { code message field }
        }
      }`,
      { input }
    );
    if (api !== mine) return;
    const result = data.sendInMail;
    if (result.errors.length) {
      $("compose-result").textContent = userErrors(result.errors);
      button.disabled = false;
      return;
    }
    $("compose-result").replaceChildren(
      'Sent "', theirs(result.conversation.subject), `". Credits left: ${result.creditsLeft}.`
    );
    $("compose-credits").textContent = String(result.creditsLeft);
    $("compose-subject").value = "";
    $("compose-body").value = "";
    composeTo = null;
    lookedUp = null;
    await loadSent();
  } catch (error) {
    if (api !== mine) return;
    button.disabled = false;
    if (isUnreachable(error)) {
      sayUnreachable("send", $("compose-result"), error.at);
      return;
    }
    throw error;
  }
}

// A free message to a connection, into the pair's one thread (started by it if there is none).
async function sendFree() {
  const button = $("compose-send");
  button.disabled = true;
  clearNotice($("compose-result"));
  const mine = api;
  const to = composeTo;
  try {
    const payload = await sendMessage({ recipientId: to, body: $("compose-body").value });
    if (api !== mine) return;
    button.disabled = composeTo !== to;
    if (payload.errors.length) {
      $("compose-result").textContent = userErrors(payload.errors);
      return;
    }
    $("compose-result").textContent = "Message sent (free).";
    $("compose-body").value = "";
  } catch (error) {
    if (api !== mine) return;
    button.disabled = composeTo !== to;
    if (isUnreachable(error)) {
      sayUnreachable("send", $("compose-result"), error.at);
      return;
    }
    throw error;
  }
}

async function sendMessage(input) {
  const data = await api.request(
    `mutation Message($input: SendMessageInput!) {
      sendMessage(input: $input) { conversation { id } message { id } errors { code message } }
    }`,
    { input }
  );
  return data.sendMessage;
}

// Paged lists (inbox, sent box, notifications): the newest PAGE first, "Show more" for the
// next page after the last one shown (by its cursor). A live update loads the list again from
// its start, as many items as it shows, so appended pages stay in place.
const PAGE = 20;

const listState = {};

function resetList(id) {
  const before = listState[id];
  // A load still under way for the previous member finds its sequence number taken, and drops
  // its answer.
  listState[id] = {
    nodes: [],
    cursor: null,
    hasNext: false,
    total: 0,
    wanted: PAGE,
    reloading: false,
    seq: before ? before.seq + 1 : 0,
  };
  $(id).replaceChildren();
  showPaging(id);
}

async function loadList(id, more = false) {
  if (!api) return;
  const list = LISTS[id];
  const state = listState[id];
  if (more && state.reloading) {
    // A load from the start is under way (a live update, a reconnect): "Show more" must not
    // drop what it brings. It becomes that load, one page longer.
    state.wanted = state.nodes.length + PAGE;
    more = false;
  }
  const seq = ++state.seq;
  state.reloading = !more;
  const mine = api;
  const nodes = more ? state.nodes.slice() : [];
  let cursor = more ? state.cursor : null;
  let hasNext = more ? state.hasNext : true;
  let total = state.total;
  let last = null;
  const wanted = more ? state.nodes.length + PAGE : Math.max(PAGE, state.wanted);
  state.wanted = wanted;
  const seen = new Set(nodes.map((n) => n.id));
  try {
    do {
      last = await list.fetch(Math.min(PAGE, wanted - nodes.length), cursor);
      if (api !== mine || state.seq !== seq) return; // signed out, or a newer load of this list
      const connection = last.connection;
      for (const node of connection.nodes) {
        if (!seen.has(node.id)) nodes.push(node);
        seen.add(node.id);
      }
      total = connection.totalCount;
      hasNext = connection.pageInfo.hasNextPage;
      cursor = connection.pageInfo.endCursor || cursor;
    } while (hasNext && nodes.length < wanted);
  } catch (error) {
    if (more && staleCursor(error) && state.seq === seq) {
      // A cursor the service no longer takes (one made before it was upgraded): the list is
      // loaded again from its start, one page longer, as "Show more" asked.
      state.wanted = state.nodes.length + PAGE;
      return loadList(id);
    }
    throw error;
  } finally {
    if (state.seq === seq) state.reloading = false; // this load is over, whatever its end
  }
  Object.assign(state, { nodes, cursor, hasNext, total });
  if (list.loaded) list.loaded(last);
  drawList(id);
}

// A list drawn again from what it holds (no read), the focus and caret kept where they were.
function drawList(id) {
  const nodes = listState[id].nodes;
  const focus = focusWithin(id);
  $(id).replaceChildren(...nodes.map((node) => LISTS[id].draw(node)));
  if (focus) focus();
  if (!nodes.length) $(id).append(el("li", { class: "muted" }, "Nothing yet."));
  showPaging(id);
}

function redrawConversations() {
  for (const id of ["inbox", "sent"]) drawList(id);
}

// The control of a list item that has the focus, as a function that gives it back to the same
// control of the item drawn anew (caret and selection included); null when none has it.
function focusWithin(id) {
  const active = document.activeElement;
  const item = active && $(id).contains(active) ? active.closest("[data-conversation-id]") : null;
  if (!item || !active.dataset.testid) return null;
  const { selectionStart, selectionEnd } = active;
  const selector = `[data-conversation-id="${CSS.escape(item.dataset.conversationId)}"] [data-testid="${active.dataset.testid}"]`;
  return () => {
    const again = $(id).querySelector(selector);
    if (!again) return;
    again.focus();
    if (typeof selectionStart === "number" && again.setSelectionRange) again.setSelectionRange(selectionStart, selectionEnd);
  };
}

function staleCursor(error) {
  return error instanceof ApiError && error.code === "BAD_USER_INPUT" && /cursor/i.test(error.message);
}

function showPaging(id) {
  const state = listState[id];
  const shown = state.nodes.length;
  $(`${id}-shown`).textContent = shown && state.total > shown ? `Showing ${shown} of ${state.total}.` : "";
  $(`${id}-shown`).dataset.total = String(state.total);
  $(`${id}-more`).hidden = !state.hasNext;
}

async function conversationsPage(role, first, after) {
  const data = await api.request(
    `query Box($role: ConversationRole!, $first: Int!, $after: String) {
      viewer {
        conversations(role: $role, first: $first, after: $after) {
          totalCount pageInfo { hasNextPage endCursor } nodes { ${CONVERSATION_FIELDS} }
        }
      }
    }`,
    { role, first, after }
  );
  return { connection: data.viewer.conversations };
}

// A conversation comes with its latest messages (`messages`, the latest LATEST_MESSAGES); a
// thread that may hold more offers its earlier ones, read once asked for, oldest first, from
// `messageConnection`. Read, a thread is kept whole here: later redraws add what is new.
const LATEST_MESSAGES = 100;
const wholeThreads = new Map(); // conversation id -> every message from its first
const readingThreads = new Set(); // conversation ids whose earlier messages are on their way

function messagesOf(conversation) {
  let shown = conversation.messages;
  const whole = wholeThreads.get(conversation.id);
  if (whole) {
    const have = new Set(whole.map((m) => m.id));
    for (const m of conversation.messages) if (!have.has(m.id)) whole.push(m);
    shown = whole;
  }
  const drawn = shown.map((m) =>
    el("p", { class: "message", "data-testid": "message" }, theirs(m.author.name), ": ", theirs(m.body))
  );
  if (!whole && conversation.messages.length >= LATEST_MESSAGES) {
    drawn.unshift(el("button", {
      type: "button", "data-testid": "earlier-messages", disabled: readingThreads.has(conversation.id),
      onclick: () => readWholeThread(conversation).catch(showError),
    }, "Show earlier messages"));
  }
  return drawn;
}

async function readWholeThread(conversation) {
  const id = conversation.id;
  if (readingThreads.has(id) || !conversation.messages.length) return;
  readingThreads.add(id);
  redrawConversations();
  const mine = api;
  const oldestShown = conversation.messages[0].id;
  const earlier = [];
  let after = null;
  try {
    for (;;) {
      const data = await api.request(
        `query Earlier($id: ID!, $after: String) {
          node(id: $id) { ... on Conversation {
            messageConnection(first: ${LATEST_MESSAGES}, after: $after) {
              pageInfo { hasNextPage endCursor } nodes { id body sentAt author { id name } }
            }
          } }
        }`,
        { id, after }
      );
      if (api !== mine) return;
      const page = data.node && data.node.messageConnection;
      if (!page) return;
      const met = page.nodes.findIndex((m) => m.id === oldestShown);
      earlier.push(...(met < 0 ? page.nodes : page.nodes.slice(0, met)));
      if (met >= 0 || !page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor;
    }
    wholeThreads.set(id, [...earlier, ...conversation.messages]);
  } finally {
    readingThreads.delete(id);
    if (api === mine) redrawConversations();
  }
}

function stateOf(conversation) {
  const response = conversation.response ? ` (${conversation.response})` : "";
  return el("span", { class: "state", "data-field": "state", "data-state": conversation.state }, conversation.state + response);
}

// One conversation in a box: its subject, the other party (the inbox names the sender, the
// sent box the recipient), its state, a note, its messages and what the viewer may do next.
function conversationItem(c, { testid, party, note, actions }) {
  const heading = c.kind === "DIRECT"
    ? el("div", {}, el("strong", { "data-field": "subject" }, "Messages"), " with ",
      el("span", { "data-field": party }, c[party].name), note)
    : el("div", {}, el("strong", { "data-field": "subject" }, c.subject), party === "sender" ? " from " : " to ",
      el("span", { "data-field": party }, c[party].name), " ", stateOf(c), note);
  return el(
    "li",
    { "data-testid": testid, "data-conversation-id": c.id, "data-state": c.state, "data-kind": c.kind },
    heading,
    messagesOf(c),
    actions || (c.state === "AWAITING_RESPONSE" ? null : messenger(c, c[party].name))
  );
}

// A message into a thread that may take one (a direct thread, an InMail that had its response).
function messenger(conversation, other) {
  const key = `message:${conversation.id}`;
  const box = el("textarea", {
    rows: 2, cols: 50, "data-testid": "message-body", placeholder: "Write a message",
    "aria-label": `Message to ${other}`,
  });
  box.value = replyDrafts.get(key) || "";
  box.addEventListener("input", () => replyDrafts.set(key, box.value));
  const result = el("p", { "data-testid": "message-result", "aria-live": "polite" });
  // The inbox may be drawn anew while a message is on its way: what comes back is said on the
  // thread's box as shown then.
  const shown = (testid) =>
    document.querySelector(`[data-conversation-id="${CSS.escape(conversation.id)}"] [data-testid="${testid}"]`);
  const post = async () => {
    if (sending.has(key)) return; // one at a time: a double click sends once
    sending.add(key);
    const button = shown("message-send");
    if (button) button.disabled = true;
    clearNotice(shown("message-result") || result);
    const mine = api;
    try {
      const payload = await sendMessage({ conversationId: conversation.id, body: box.value });
      if (api !== mine) return;
      if (payload.errors.length) {
        (shown("message-result") || result).textContent = userErrors(payload.errors);
        return;
      }
      replyDrafts.delete(key);
      for (const written of [box, shown("message-body")]) if (written) written.value = "";
    } catch (error) {
      if (api !== mine) return;
      if (isUnreachable(error)) sayUnreachable("send", shown("message-result") || result, error.at);
      else showError(error);
    } finally {
      sending.delete(key);
      const again = shown("message-send");
      if (again) again.disabled = false;
    }
  };
  return el("div", { class: "respond" }, box,
    el("button", {
      type: "button", "data-testid": "message-send", onclick: post, "aria-label": `Send message to ${other}`,
      disabled: sending.has(key),
    }, "Send message"),
    result);
}

function inboxItem(c) {
  const awaiting = c.kind === "INMAIL" && c.state === "AWAITING_RESPONSE";
  return conversationItem(c, {
    testid: "inbox-item",
    party: "sender",
    note: el("span", { class: "muted" }, " ", when(c.sentAt)),
    // A response that got no answer stays said on its InMail, answered or not since.
    actions: awaiting ? responder(c) : respondNotes.has(c.id) ? respondResult(c) : null,
  });
}

function loadInbox() {
  return loadList("inbox");
}

// Where the result of a response to this InMail shows: its outage message, kept across the
// inbox's redraws until dismissed or the next response to it, is drawn again here.
function respondResult(conversation) {
  const result = el("p", { "data-testid": "respond-result", "aria-live": "polite" });
  const outage = respondNotes.get(conversation.id);
  if (outage) sayUnreachable(outage.action, result, outage.at, () => respondNotes.delete(conversation.id));
  return result;
}

// What the viewer has written in each reply box, by conversation: a live update draws the inbox
// anew, and must not lose it.
const replyDrafts = new Map();
const sending = new Set(); // the message boxes whose message is on its way

function responder(conversation) {
  const note = el("textarea", {
    rows: 2, cols: 50, "data-testid": "reply-body", placeholder: "Write a reply",
    "aria-label": `Reply to "${conversation.subject}" from ${conversation.sender.name}`,
  });
  note.value = replyDrafts.get(conversation.id) || "";
  note.addEventListener("input", () => replyDrafts.set(conversation.id, note.value));
  const result = respondResult(conversation);
  const respond = (response) => async () => {
    respondNotes.delete(conversation.id);
    clearNotice(result);
    const mine = api;
    try {
      const body = note.value.trim() || null;
      const data = await api.request(
        `mutation Respond($input: RespondToInMailInput!) {
          respondToInMail(input: $input) { creditedBack conversation { id state } errors { code message } }
        }`,
        { input: { conversationId: conversation.id, response, body } }
      );
      const payload = data.respondToInMail;
      if (payload.errors.length) {
        result.textContent = userErrors(payload.errors);
        return;
      }
      replyDrafts.delete(conversation.id);
      await loadInbox();
    } catch (error) {
      if (api !== mine) return;
      if (isUnreachable(error)) {
        respondNotes.set(conversation.id, { action: "respond", at: error.at });
        // The inbox may have been drawn anew meanwhile: say it on the InMail as shown now.
        const shown = document.querySelector(`#inbox [data-conversation-id="${CSS.escape(conversation.id)}"] [data-testid=respond-result]`);
        const target = shown || result;
        sayUnreachable("respond", target, error.at, () => respondNotes.delete(conversation.id));
      } else showError(error);
    }
  };
  return el(
    "div",
    { class: "respond" },
    RESPONSES.map(([value, label]) =>
      el("button", {
        type: "button", "data-action": value, "data-testid": `respond-${value}`, onclick: respond(value),
        "aria-label": `${label}: "${conversation.subject}"`,
      }, label)
    ),
    el("div", {}, note,
      el("button", {
        type: "button", "data-action": "REPLY", "data-testid": "respond-REPLY", onclick: respond("REPLY"),
        "aria-label": `Reply: "${conversation.subject}"`,
      }, "Reply")),
    result
  );
}

function sentItem(c) {
  return conversationItem(c, {
    testid: "sent-item",
    party: "recipient",
    note: c.creditedBack ? el("span", { "data-field": "credited-back" }, " credit returned") : null,
  });
}

function loadSent() {
  return loadList("sent");
}

// Notifications.
const NOTIFICATION_TEXT = {
  INMAIL_RECEIVED: "New InMail",
  REMINDER: "Reminder: an InMail awaits your response",
  RESPONSE_RECEIVED: "Response to your InMail",
  CREDITED_BACK: "A credit came back",
  RENEWED: "Your monthly credits arrived",
  CREDITS_EXPIRING: "Credits expire soon",
  PURCHASE_COMPLETED: "Purchase completed",
  PURCHASE_REFUNDED: "Purchase refunded",
};

export function credits(count) {
  return `${count} ${count === 1 ? "credit" : "credits"}`;
}

async function notificationsPage(first, after) {
  const data = await api.request(
    `query Notifications($first: Int!, $after: String) {
      viewer {
        unread: notifications(unreadOnly: true, first: 1) { totalCount }
        notifications(first: $first, after: $after) {
          totalCount pageInfo { hasNextPage endCursor }
          nodes { id kind at readAt conversation { id subject } lot { expiresAt remaining } purchase { quantity } }
        }
      }
    }`,
    { first, after }
  );
  return { connection: data.viewer.notifications, unread: data.viewer.unread.totalCount };
}

function notificationItem(n) {
  return el(
    "li",
    { "data-testid": "notification", "data-kind": n.kind, "data-notification-id": n.id, class: n.readAt ? "" : "unread" },
    NOTIFICATION_TEXT[n.kind] || n.kind,
    n.conversation ? [": ", theirs(n.conversation.subject)] : "",
    n.purchase ? `: ${credits(n.purchase.quantity)}` : "",
    n.lot && n.kind === "CREDITS_EXPIRING" ? `: ${n.lot.remaining} on ${when(n.lot.expiresAt)}` : "",
    el("span", { class: "muted" }, " ", when(n.at)),
    n.readAt ? null : el("button", {
      type: "button", "data-testid": "mark-read", onclick: () => markRead({ ids: [n.id] }),
      "aria-label": `Mark read: ${NOTIFICATION_TEXT[n.kind] || n.kind}, ${when(n.at)}`,
    }, "Mark read")
  );
}

function loadNotifications() {
  return loadList("notifications");
}

const LISTS = {
  inbox: { fetch: (first, after) => conversationsPage("RECEIVED", first, after), draw: inboxItem },
  sent: { fetch: (first, after) => conversationsPage("SENT", first, after), draw: sentItem },
  notifications: { fetch: notificationsPage, draw: notificationItem, loaded: (page) => showUnread(page.unread) },
};
for (const id of Object.keys(LISTS)) resetList(id);

function showUnread(count) {
  $("unread-count").textContent = String(count);
  $("unread-count").dataset.count = String(count);
}

async function markRead(input) {
  clearNotice($("notifications-result"));
  const mine = api;
  try {
    const data = await api.request(
      `mutation Read($input: MarkNotificationsReadInput!) { markNotificationsRead(input: $input) { unreadCount errors { code message } } }`,
      { input }
    );
    if (api !== mine) return;
    const result = data.markNotificationsRead;
    showUnread(result.unreadCount);
    if (result.errors.length) $("notifications-result").textContent = userErrors(result.errors);
    await loadNotifications();
  } catch (error) {
    if (api !== mine) return;
    if (isUnreachable(error)) sayUnreachable("read", $("notifications-result"), error.at);
    else showError(error);
  }
}

// Buying credits: one key per purchase attempt.
async function buy() {
  const quantity = Number.parseInt($("buy-quantity").value, 10);
  if (!Number.isInteger(quantity) || quantity < 1) {
    clearNotice($("buy-result"));
    $("buy-result").textContent = "Enter a whole number of credits.";
    return;
  }
  // One purchase at a time: the button waits for the answer, so a double click buys once.
  $("buy-credits").disabled = true;
  clearNotice($("buy-result"));
  const mine = api;
  let data;
  try {
    data = await api.request(
      `mutation Buy($input: PurchaseInMailCreditsInput!) {
        purchaseInMailCredits(input: $input) { creditsLeft lot { quantity expiresAt } errors { code message } }
      }`,
      { input: { quantity, idempotencyKey: newKey() } }
    );
  } catch (error) {
    if (api !== mine) return;
    if (!isUnreachable(error)) throw error;
    sayUnreachable("buy", $("buy-result"), error.at);
    return;
  } finally {
    if (viewer) showPlan(viewer);
  }
  if (api !== mine) return; // signed out meanwhile: the answer is not the next member's
  const result = data.purchaseInMailCredits;
  if (result.errors.some((e) => e.code === "SUBSCRIPTION_INACTIVE" || e.code === "UPGRADE_REQUIRED")) {
    refreshPlan().catch(showError); // the plan changed elsewhere, with nothing to forfeit
  }
  const lot = result.lot;
  $("buy-result").textContent = result.errors.length
    ? userErrors(result.errors)
    : `Bought ${credits(lot.quantity)}; ${lot.quantity === 1 ? "it expires" : "they expire"} ${when(lot.expiresAt)}. Credits: ${result.creditsLeft}.`;
}

function on(id, event, handler) {
  $(id).addEventListener(event, (e) => {
    e.preventDefault();
    say("");
    Promise.resolve(handler(e)).catch(showError);
  });
}

on("sign-in-form", "submit", () => signIn($("token-input").value.trim().replace(/^Bearer\s+/i, "")));
on("sign-out", "click", signOut);
on("compose-lookup-form", "submit", () => lookUp($("compose-recipient").value.trim()));
$("compose-recipient").addEventListener("input", () => {
  if ($("compose-recipient").value.trim() !== lookedUp) forgetLookUp();
});
on("compose-form", "submit", send);
on("mark-all-read", "click", () => markRead({ all: true }));
on("buy-form", "submit", buy);
for (const id of Object.keys(LISTS)) on(`${id}-more`, "click", () => loadList(id, true));

// The tab's saved token signs in again on a reload. The service being out of reach is no
// reason to forget it: the page tries again, at most 3 s apart, until it answers.
async function resume(token, attempt = 0) {
  try {
    await signIn(token);
  } catch (error) {
    if (isUnreachable(error) && !api) {
      sayUnreachable("resume", $("status"), error.at);
      setTimeout(() => resume(token, attempt + 1), Math.min(3000, 300 * 2 ** attempt));
      return;
    }
    if (!api) sessionStorage.removeItem(TOKEN_KEY);
    showError(error);
  }
}

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) resume(saved);
document.body.dataset.ready = "1";
