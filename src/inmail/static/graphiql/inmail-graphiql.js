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

  var fetcher = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: socket.href,
  });

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
    return fetcher(params, withoutHint(withDocument(params, options)));
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: inmailFetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      headerEditorEnabled: true,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: "headers",
    })
  );
})();
