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
  async request(query, variables = {}) {
    let response;
    try {
      response = await this.post(query, variables);
    } catch (networkError) {
      if (!safeToRepeat(query, variables)) throw networkError;
      response = await this.post(query, variables);
    }
    let body;
    try {
      body = await response.json();
    } catch (notJson) {
      throw new ApiError(`The server answered ${response.status}.`, "BAD_RESPONSE");
    }
    if (body.errors && body.errors.length) {
      const first = body.errors[0];
      throw new ApiError(first.message, first.extensions && first.extensions.code);
    }
    return body.data;
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

  // A websocket that lives until close(); onState hears "connecting", "connected", "closed".
  connect(onState) {
    const url = new URL(this.endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.live = createClient({
      url: url.href,
      connectionParams: { Authorization: `Bearer ${this.token}` },
      lazy: false,
      keepAlive: 10000,
      retryAttempts: 1000,
      // 4403: the token was refused or has expired; reconnecting with it cannot succeed.
      shouldRetry: (event) => !(event && event.code === TOKEN_REFUSED),
      on: {
        connecting: () => onState("connecting"),
        connected: () => onState("connected"),
        closed: (event) => onState(event && event.code === TOKEN_REFUSED ? "refused" : "closed"),
      },
    });
  }

  // Calls onData with each result's data until the returned function is called.
  subscribe(query, onData, onError) {
    return this.live.subscribe(
      { query },
      {
        next: (result) => {
          if (result.errors && result.errors.length) onError(result.errors[0].message);
          else onData(result.data);
        },
        error: (error) => onError(describe(error)),
        complete: () => {},
      }
    );
  }

  close() {
    if (this.live) this.live.dispose();
    this.live = null;
  }
}

const TOKEN_REFUSED = 4403;

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
