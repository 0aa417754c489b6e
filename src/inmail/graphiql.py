"""GraphiQL on GET /graphql, served from the service's own files: no CDN, nothing from elsewhere.

The page loads React, ReactDOM and GraphiQL's UMD build from /static/graphiql/ (vendored by
scripts/vendor-browser-assets.sh) and starts GraphiQL with static/graphiql/inmail-graphiql.js:
queries over HTTP POST and subscriptions over graphql-transport-ws, both on /graphql.
"""

from __future__ import annotations

from starlette.responses import HTMLResponse

STATIC_PREFIX = "/static"


def security_headers(style_src: str = "'self'", font_src: str = "'none'") -> dict[str, str]:
    """The headers of a page the service serves: only its own scripts run, it talks to this
    origin alone ('self' covers ws: and wss: of this origin), and no other site may frame it."""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            f"style-src {style_src}",
            f"font-src {font_src}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


# GraphiQL sets style attributes and ships its fonts as data: URIs.
SECURITY_HEADERS = security_headers("'self' 'unsafe-inline'", "'self' data:")

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>InMail credits service: GraphiQL</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{static}/graphiql/graphiql.min.css">
    <link rel="stylesheet" href="{static}/graphiql/inmail-graphiql.css">
  </head>
  <body>
    <div id="graphiql" data-testid="graphiql">Loading GraphiQL...</div>
    <script src="{static}/graphiql/react.production.min.js"></script>
    <script src="{static}/graphiql/react-dom.production.min.js"></script>
    <script src="{static}/graphiql/graphiql.min.js"></script>
    <script src="{static}/graphiql/inmail-graphiql.js"></script>
  </body>
</html>
"""


def graphiql_page() -> HTMLResponse:
    """The GraphiQL page, with a policy that lets it load nothing but this service's files."""
    return HTMLResponse(_PAGE.format(static=STATIC_PREFIX), headers=SECURITY_HEADERS)
