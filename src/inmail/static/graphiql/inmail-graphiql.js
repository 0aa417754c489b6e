// Starts GraphiQL against this service: HTTP POST and graphql-transport-ws, both on /graphql.
// Loaded after React, ReactDOM and GraphiQL's UMD build (globals React, ReactDOM, GraphiQL).
(function () {
  "use strict";

  var TOKEN_HINT = "Bearer <token from: inmail token --member ID>";

  var DEFAULT_QUERY = [
    "# InMail credits service. Public fields need no token:",
    "{",
    "  plans { type maxBalance }",
    "  now",
    "}",
    "",
    "# Everything else needs a token in the Headers",
    "# tab below, from the server's data folder:",
    "#   inmail token --member <member id>",
    "#   inmail token --admin",
    "# Then, for example:",
    "#   { viewer { name inmailBalance } }",
    "# Subscriptions run here too (graphql-transport-ws,",
    "# the same headers):",
    "#   subscription { balanceChanged { balance delta } }",
    "",
  ].join("\n");

  var DEFAULT_HEADERS = JSON.stringify({ Authorization: TOKEN_HINT }, null, 2);

  var endpoint = new URL("/graphql", window.location.href);
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  // Close codes 4400-4499 are the service refusing the connection (4403: a missing, bad or
  // expired token). graphql-ws would retry 4403 five times with growing waits (about 40 s of
  // nothing on screen); the same token cannot succeed, so the error shows at once instead.
  function retryable(event) {
    return !(event && typeof event.code === "number" && event.code >= 4400 && event.code <= 4499);
  }

  // The vendored graphql-ws client (an ES module; GraphiQL's own copy retries 4403).
  var websocketModule = null;
  function loadWebsocketModule() {
    if (!websocketModule) websocketModule = import("/static/vendor/graphql-ws/client.mjs");
    return websocketModule;
  }

  // HTTP POST for queries and mutations; a subscription opens a websocket of its own (lazy: it
  // connects on subscribing and closes when the subscription ends) that sends the Headers tab
  // as its connection_init payload.
  function fetcherFor(headers) {
    return loadWebsocketModule().then(function (graphqlWs) {
      var client = graphqlWs.createClient({
        url: socket.href,
        connectionParams: Object.assign({}, headers),
        shouldRetry: retryable,
      });
      return GraphiQL.createFetcher({ url: endpoint.href, wsClient: client });
    });
  }

  // While the Headers tab still holds the hint, send no Authorization at all: public fields
  // answer, and nothing pretends to be a token.
  function withoutHint(options) {
    var headers = options && options.headers;
    if (!headers || typeof headers !== "object") return options;
    var cleaned = {};
    Object.keys(headers).forEach(function (name) {
      var value = headers[name];
      if (name.toLowerCase() === "authorization" && String(value).indexOf("<") !== -1) return;
      cleaned[name] = value;
    });
    return Object.assign({}, options, { headers: cleaned });
  }

  // The fetcher picks the websocket for a subscription from options.documentAST, which
  // GraphiQL parses a moment after each edit: read the document actually sent instead.
  function withDocument(params, options) {
    try {
      var document = GraphiQL.GraphQL.parse(params.query);
      return Object.assign({}, options, { documentAST: document });
    } catch (syntaxError) {
      return options;
    }
  }

  function inmailFetcher(params, options) {
    var prepared = withoutHint(withDocument(params, options));
    return fetcherFor(prepared && prepared.headers).then(function (fetcher) {
      return fetcher(params, prepared);
    });
  }

  // GraphiQL's storage, minus every header: GraphiQL 3.9's history records each run's Headers
  // tab (the bearer token) in "graphiql:queries" even with shouldPersistHeaders: false, and a
  // tab's state or the "headers" key could carry it too. This storage writes through to
  // localStorage but never writes a header: the key "headers" is not stored at all, and in the
  // operations GraphiQL saves (history, favorites, tabs) every "headers" value is null. The key
  // itself stays: GraphiQL restores saved tabs only when each has one (a string or null).
  // Restoring an entry then leaves the Headers tab empty: paste the token again.
  var PREFIX = "graphiql:";
  var SAVED_OPERATIONS = [PREFIX + "queries", PREFIX + "favorites", PREFIX + "tabState"];

  // `value` with every "headers" value null; `found.any` tells whether there was one to clear.
  function withoutHeaders(value, found) {
    if (Array.isArray(value)) {
      return value.map(function (item) {
        return withoutHeaders(item, found);
      });
    }
    if (!value || typeof value !== "object") return value;
    var cleaned = {};
    Object.keys(value).forEach(function (name) {
      if (name.toLowerCase() === "headers") {
        if (value[name] !== null) found.any = true;
        cleaned[name] = null;
      } else {
        cleaned[name] = withoutHeaders(value[name], found);
      }
    });
    return cleaned;
  }

  // The value to store under key, or null for nothing at all. Only the saved operations are
  // read, and rewritten only where they held headers: anything else is stored as given.
  function scrubbed(key, value) {
    if (key === PREFIX + "headers") return null;
    if (typeof value !== "string" || SAVED_OPERATIONS.indexOf(key) < 0) return value;
    var parsed;
    try {
      parsed = JSON.parse(value);
    } catch (notJson) {
      return value;
    }
    var found = { any: false };
    var cleaned = withoutHeaders(parsed, found);
    return found.any ? JSON.stringify(cleaned) : value;
  }

  function ownKeys() {
    var keys = [];
    for (var i = 0; i < localStorage.length; i++) {
      var key = localStorage.key(i);
      if (key && key.indexOf(PREFIX) === 0) keys.push(key);
    }
    return keys;
  }

  var headerlessStorage = {
    getItem: function (key) {
      return localStorage.getItem(key);
    },
    setItem: function (key, value) {
      var stored = scrubbed(key, value);
      if (stored === null) localStorage.removeItem(key);
      else localStorage.setItem(key, stored);
    },
    removeItem: function (key) {
      localStorage.removeItem(key);
    },
    clear: function () {
      ownKeys().forEach(function (key) {
        localStorage.removeItem(key);
      });
    },
    get length() {
      return ownKeys().length;
    },
  };

  // What an earlier version of this page left behind (a token in the history) goes now.
  try {
    ownKeys().forEach(function (key) {
      headerlessStorage.setItem(key, localStorage.getItem(key));
    });
  } catch (storageError) {
    // localStorage refused (disabled, or full): GraphiQL copes without it.
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: inmailFetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      headerEditorEnabled: true,
      shouldPersistHeaders: false,
      storage: headerlessStorage,
      defaultEditorToolsVisibility: "headers",
    })
  );
})();
