// The public GraphQL API of this service: queries and mutations over HTTP POST, subscriptions
// over graphql-transport-ws (the vendored graphql-ws client), both on /graphql.
import { createClient } from "/static/vendor/graphql-ws/client.mjs";

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
    this.endpoint = new URL("/graphql", window.location.href).href;
    this.live = null;
  }

  // One operation; GraphQL errors (UNAUTHENTICATED, FORBIDDEN, ...) become an ApiError.
  // A request that never got an answer is sent once more, as is, when that is safe: a query,
  // or a mutation whose idempotency key makes its retry answer the first result (a send or a
  // purchase cannot spend or charge twice). Any other mutation is not repeated blindly.
  // An operation the service refused before running it, saying when to try again (its
  // `retryAfterSeconds`: this member's requests in flight were already at their bound), is
  // sent again then, a few times at most: it never ran, so repeating it is safe.
  async request(query, variables = {}) {
    for (let refusals = 0; ; refusals++) {
      const body = await this.answer(query, variables);
      const wait = retryAfterSeconds(body);
      if (wait === null || refusals >= NEVER_RAN_RETRIES) return dataOf(body);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000 * (1 + Math.random() / 2)));
    }
  }

  async answer(query, variables) {
    const askedAt = new Date();
    let response;
    try {
      try {
        response = await this.post(query, variables);
      } catch (networkError) {
        if (!safeToRepeat(query, variables)) throw networkError;
        response = await this.post(query, variables);
      }
    } catch (networkError) {
      // No answer at all ("Failed to fetch"): the service could not be reached, and a mutation
      // may or may not have happened. The caller words what to check, and says when it asked.
      const unreachable = new ApiError("Could not reach the service.", UNREACHABLE);
      unreachable.at = askedAt;
      throw unreachable;
    }
    try {
      return await response.json();
    } catch (notJson) {
      throw new ApiError(`The server answered ${response.status}.`, "BAD_RESPONSE");
    }
  }

  post(query, variables) {
    return fetch(this.endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        Authorization: `Bearer ${this.token}`,
      },
      body: JSON.stringify({ query, variables }),
    });
  }

  // A websocket that lives until close(); onState hears "connecting", "connected", "closed",
  // "refused", and "reconnected" for every connection after the first (events sent while the
  // socket was down are not replayed: the caller reloads what it shows, once its subscriptions
  // are live again). Every subscription is sent again on each new connection, in the order
  // they were made, right after "reconnected" is heard.
  connect(onState) {
    let connectedBefore = false;
    const url = new URL(this.endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.live = createClient({
      url: url.href,
      connectionParams: { Authorization: `Bearer ${this.token}` },
      lazy: false,
      keepAlive: 10000,
      // Reconnect for as long as the page is open, never waiting more than RETRY_CAP_MS between
      // attempts (graphql-ws doubles its wait without a cap by default): the client is live
      // again within seconds of the service coming back.
      retryAttempts: Infinity,
      retryWait: (retries) => new Promise((resolve) => setTimeout(resolve, retryDelay(retries))),
      // 4403: the token was refused or has expired; reconnecting with it cannot succeed.
      shouldRetry: (event) => !(event && event.code === TOKEN_REFUSED),
      on: {
        connecting: () => onState("connecting"),
        connected: () => {
          onState(connectedBefore ? "reconnected" : "connected");
          connectedBefore = true;
        },
        closed: (event) => onState(event && event.code === TOKEN_REFUSED ? "refused" : "closed"),
      },
    });
  }

  // Calls onData with each result's data until the returned function is called. onEnd hears
  // the server end the subscription (an error or a completion): it is then never sent again,
  // not even on a new connection.
  subscribe(query, onData, onError, onEnd = () => {}) {
    return this.live.subscribe(
      { query },
      {
        next: (result) => {
          if (result.errors && result.errors.length) onError(result.errors[0].message);
          else onData(result.data);
        },
        error: (error) => {
          onError(describe(error));
          onEnd();
        },
        complete: onEnd,
      }
    );
  }

  close() {
    if (this.live) this.live.dispose();
    this.live = null;
  }
}

const TOKEN_REFUSED = 4403;
export const UNREACHABLE = "UNREACHABLE";
const RETRY_CAP_MS = 3000;

// 300 ms, 600 ms, 1.2 s, ... capped at RETRY_CAP_MS, each scaled by a random 50-100% so that
// many pages do not all come back at the same instant.
export function retryDelay(retries) {
  const base = Math.min(RETRY_CAP_MS, 300 * 2 ** Math.min(retries, 10));
  return Math.round(base * (0.5 + Math.random() * 0.5));
}

const NEVER_RAN_RETRIES = 3;
const RETRY_AFTER_CAP_S = 10;

function dataOf(body) {
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.message, first.extensions && first.extensions.code);
  }
  return body.data;
}

// The seconds after which to send again an operation that never ran (an answer with errors and
// no data, its first error saying when), or null.
function retryAfterSeconds(body) {
  if (!body || body.data != null || !body.errors || !body.errors.length) return null;
  const seconds = body.errors[0].extensions && body.errors[0].extensions.retryAfterSeconds;
  if (typeof seconds !== "number" || !(seconds > 0)) return null;
  return Math.min(seconds, RETRY_AFTER_CAP_S);
}

function safeToRepeat(query, variables) {
  const isMutation = /^\s*mutation\b/.test(query);
  return !isMutation || Boolean(variables.input && variables.input.idempotencyKey);
}

function describe(error) {
  if (error instanceof Error) return error.message;
  if (error && typeof error.code === "number") return `the socket closed (${error.code} ${error.reason || ""})`;
  if (Array.isArray(error) && error.length) return error[0].message;
  return "the live connection failed";
}
