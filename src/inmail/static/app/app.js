// The reference web client: sign in with a token, compose, inbox, sent box, notifications,
// live balance, buying credits. Every piece of data reaches the page as textContent.
import { Api, ApiError } from "/static/app/api.js";

const TOKEN_KEY = "inmail.token";

const REASONS = {
  INVALID_INPUT: "Something in the request is not valid.",
  NOT_FOUND: "There is no member with that id.",
  CANNOT_MESSAGE_SELF: "You cannot send an InMail to yourself.",
  RECIPIENT_IS_CONNECTION: "You are connected: send a free message instead of an InMail.",
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

function say(text) {
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

async function signIn(token) {
  const candidate = new Api(token);
  const data = await candidate.request(`{
    viewer {
      id name
      plan { type canSendInMail canPurchaseCredits creditPrice { amount currency } }
      inmailBalance
    }
  }`);
  if (!data.viewer) throw new ApiError("That token is not a member's (an admin has no inbox).");
  api = candidate;
  viewer = data.viewer;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("viewer-name").textContent = viewer.name;
  $("viewer-id").textContent = viewer.id;
  $("viewer-plan").textContent = viewer.plan.type;
  showBalance(viewer.inmailBalance);
  showPrice(viewer.plan);
  goLive();
  await Promise.all([loadInbox(), loadSent(), loadNotifications()]);
}

function signOut() {
  stopLive.forEach((stop) => stop());
  stopLive = [];
  if (api) api.close();
  api = null;
  viewer = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  for (const id of ["inbox", "sent", "notifications"]) $(id).replaceChildren();
  say("Signed out.");
}

function showBalance(balance) {
  $("balance").textContent = String(balance);
  $("balance").dataset.balance = String(balance);
}

function showPrice(plan) {
  const price = plan.creditPrice;
  $("buy-price").textContent = plan.canPurchaseCredits && price
    ? `One credit costs ${(price.amount / 100).toFixed(2)} ${price.currency}.`
    : REASONS.PURCHASE_NOT_ALLOWED;
  $("buy-credits").disabled = !plan.canPurchaseCredits;
}

function setLiveState(state) {
  if (state === "refused") {
    signOut();
    say("Signed out: the token was refused or has expired. Sign in with a new one.");
    return;
  }
  $("live-status").dataset.state = state;
  $("live-status").textContent = state === "connected" ? "live" : state + "...";
}

function goLive() {
  api.connect(setLiveState);
  const failed = (what) => (message) => say(`Live ${what}: ${message}`);
  stopLive.push(
    api.subscribe(
      "subscription { balanceChanged { balance delta reason at } }",
      (data) => {
        showBalance(data.balanceChanged.balance);
        if ($("compose-credits").dataset.known) $("compose-credits").textContent = String(data.balanceChanged.balance);
      },
      failed("balance")
    ),
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
    )
  );
}

function showError(error) {
  if (error instanceof ApiError && error.code === "UNAUTHENTICATED") {
    signOut();
    say(`Signed out: ${error.message}`);
    return;
  }
  say(error instanceof Error ? error.message : String(error));
}

// Compose: who, whether the viewer may send, then send with a fresh key per attempt.
let composeTo = null;

async function lookUp(recipientId) {
  composeTo = null;
  $("compose-send").disabled = true;
  $("compose-reason").textContent = "";
  $("compose-result").textContent = "";
  const data = await api.request(
    `query Compose($id: ID!) {
      member(id: $id) { id name headline }
      compose(recipientId: $id) { canSend reason creditsLeft recipientIsConnection }
    }`,
    { id: recipientId }
  );
  const compose = data.compose;
  $("compose-recipient-name").textContent = data.member ? data.member.name : "no such member";
  $("compose-credits").textContent = String(compose.creditsLeft);
  $("compose-credits").dataset.known = "1";
  $("compose-reason").textContent = compose.canSend ? "" : reasonOf(compose.reason);
  $("compose-reason").dataset.reason = compose.reason || "";
  if (compose.canSend) {
    composeTo = recipientId;
    $("compose-send").disabled = false;
  }
}

async function send() {
  if (!composeTo) return;
  const button = $("compose-send");
  button.disabled = true;
  const input = {
    recipientId: composeTo,
    subject: $("compose-subject").value,
    body: $("compose-body").value,
    idempotencyKey: newKey(),
  };
  try {
    const data = await api.request(
      `mutation Send($input: SendInMailInput!) {
        sendInMail(input: $input) {
          creditsLeft conversation { id subject state } errors { code message field }
        }
      }`,
      { input }
    );
    const result = data.sendInMail;
    if (result.errors.length) {
      $("compose-result").textContent = userErrors(result.errors);
      button.disabled = false;
      return;
    }
    $("compose-result").textContent = `Sent "${result.conversation.subject}". Credits left: ${result.creditsLeft}.`;
    $("compose-credits").textContent = String(result.creditsLeft);
    $("compose-subject").value = "";
    $("compose-body").value = "";
    composeTo = null;
    await loadSent();
  } catch (error) {
    button.disabled = false;
    throw error;
  }
}

// Inbox and sent box.
async function conversations(role) {
  const data = await api.request(
    `query Box($role: ConversationRole!) {
      viewer { conversations(role: $role, first: 20) { totalCount nodes { ${CONVERSATION_FIELDS} } } }
    }`,
    { role }
  );
  return data.viewer.conversations.nodes;
}

function messagesOf(conversation) {
  return conversation.messages.map((m) =>
    el("p", { class: "message", "data-testid": "message" }, `${m.author.name}: `, m.body)
  );
}

function stateOf(conversation) {
  const response = conversation.response ? ` (${conversation.response})` : "";
  return el("span", { class: "state", "data-field": "state", "data-state": conversation.state }, conversation.state + response);
}

// A box lists the viewer's conversations in one role, each drawn by `item`.
async function showBox(listId, role, item) {
  const nodes = await conversations(role);
  $(listId).replaceChildren(...nodes.map((c) => item(c)));
  if (!nodes.length) $(listId).append(el("li", { class: "muted" }, "Nothing yet."));
}

// One conversation in a box: its subject, the other party (the inbox names the sender, the
// sent box the recipient), its state, a note, its messages and what the viewer may do next.
function conversationItem(c, { testid, party, note, actions }) {
  return el(
    "li",
    { "data-testid": testid, "data-conversation-id": c.id, "data-state": c.state },
    el("div", {}, el("strong", { "data-field": "subject" }, c.subject), party === "sender" ? " from " : " to ",
      el("span", { "data-field": party }, c[party].name), " ", stateOf(c), note),
    messagesOf(c),
    actions
  );
}

async function loadInbox() {
  await showBox("inbox", "RECEIVED", (c) =>
    conversationItem(c, {
      testid: "inbox-item",
      party: "sender",
      note: el("span", { class: "muted" }, " ", when(c.sentAt)),
      actions: c.kind === "INMAIL" && c.state === "AWAITING_RESPONSE" ? responder(c) : null,
    })
  );
}

function responder(conversation) {
  const note = el("textarea", { rows: 2, cols: 50, "data-testid": "reply-body", placeholder: "Write a reply" });
  const result = el("p", { "data-testid": "respond-result" });
  const respond = (response) => async () => {
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
      await loadInbox();
    } catch (error) {
      showError(error);
    }
  };
  return el(
    "div",
    { class: "respond" },
    RESPONSES.map(([value, label]) =>
      el("button", { type: "button", "data-action": value, "data-testid": `respond-${value}`, onclick: respond(value) }, label)
    ),
    el("div", {}, note,
      el("button", { type: "button", "data-action": "REPLY", "data-testid": "respond-REPLY", onclick: respond("REPLY") }, "Reply")),
    result
  );
}

async function loadSent() {
  await showBox("sent", "SENT", (c) =>
    conversationItem(c, {
      testid: "sent-item",
      party: "recipient",
      note: c.creditedBack ? el("span", { "data-field": "credited-back" }, " credit returned") : null,
    })
  );
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

async function loadNotifications() {
  const data = await api.request(`{
    viewer {
      unread: notifications(unreadOnly: true, first: 1) { totalCount }
      notifications(first: 20) {
        nodes { id kind at readAt conversation { id subject } lot { expiresAt remaining } purchase { quantity } }
      }
    }
  }`);
  showUnread(data.viewer.unread.totalCount);
  $("notifications").replaceChildren(
    ...data.viewer.notifications.nodes.map((n) =>
      el(
        "li",
        { "data-testid": "notification", "data-kind": n.kind, "data-notification-id": n.id, class: n.readAt ? "" : "unread" },
        NOTIFICATION_TEXT[n.kind] || n.kind,
        n.conversation ? `: ${n.conversation.subject}` : "",
        n.purchase ? `: ${n.purchase.quantity} credits` : "",
        n.lot && n.kind === "CREDITS_EXPIRING" ? `: ${n.lot.remaining} on ${when(n.lot.expiresAt)}` : "",
        el("span", { class: "muted" }, " ", when(n.at)),
        n.readAt ? null : el("button", { type: "button", "data-testid": "mark-read", onclick: () => markRead({ ids: [n.id] }) }, "Mark read")
      )
    )
  );
}

function showUnread(count) {
  $("unread-count").textContent = String(count);
  $("unread-count").dataset.count = String(count);
}

async function markRead(input) {
  try {
    const data = await api.request(
      `mutation Read($input: MarkNotificationsReadInput!) { markNotificationsRead(input: $input) { unreadCount errors { code message } } }`,
      { input }
    );
    showUnread(data.markNotificationsRead.unreadCount);
    await loadNotifications();
  } catch (error) {
    showError(error);
  }
}

// Buying credits: one key per purchase attempt.
async function buy() {
  const quantity = Number.parseInt($("buy-quantity").value, 10);
  if (!Number.isInteger(quantity) || quantity < 1) {
    $("buy-result").textContent = "Enter a whole number of credits.";
    return;
  }
  // One purchase at a time: the button waits for the answer, so a double click buys once.
  $("buy-credits").disabled = true;
  let data;
  try {
    data = await api.request(
      `mutation Buy($input: PurchaseInMailCreditsInput!) {
        purchaseInMailCredits(input: $input) { creditsLeft lot { quantity expiresAt } errors { code message } }
      }`,
      { input: { quantity, idempotencyKey: newKey() } }
    );
  } finally {
    if (viewer) $("buy-credits").disabled = !viewer.plan.canPurchaseCredits;
  }
  const result = data.purchaseInMailCredits;
  $("buy-result").textContent = result.errors.length
    ? userErrors(result.errors)
    : `Bought ${result.lot.quantity}; they expire ${when(result.lot.expiresAt)}. Credits: ${result.creditsLeft}.`;
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
on("compose-form", "submit", send);
on("mark-all-read", "click", () => markRead({ all: true }));
on("buy-form", "submit", buy);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved).catch((error) => { sessionStorage.removeItem(TOKEN_KEY); showError(error); });
document.body.dataset.ready = "1";
