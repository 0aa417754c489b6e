#!/usr/bin/env bash
# Refreshes the browser files the service serves itself (GraphiQL, React, graphql-ws) from the
# npm registry: `npm pack` each pinned package, copy its built files, record what was copied.
# Nothing is installed or built. Change a version below, run this, commit src/inmail/static/.
set -euo pipefail

GRAPHIQL=3.9.0      # the last major with a UMD build (graphiql.min.js needs React as globals)
REACT=18.3.1        # graphiql 3 asks for React 16.8-18
GRAPHQL_WS=5.16.2   # the web client's graphql-transport-ws client, as plain ES modules

root="$(cd "$(dirname "$0")/.." && pwd)"
static="$root/src/inmail/static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
versions="$work/VERSIONS"

unpack() { # unpack NAME@VERSION -> prints the folder holding the package
    local spec="$1" dir="$work/${1//[@\/]/_}"
    mkdir -p "$dir"
    npm pack --silent --pack-destination "$dir" "$spec" >/dev/null
    tar -xzf "$dir"/*.tgz -C "$dir"
    local integrity
    integrity="$(npm view "$spec" dist.integrity)"
    printf '%s %s\n' "$spec" "$integrity" >>"$versions"
    echo "$dir/package"
}

graphiql="$(unpack "graphiql@$GRAPHIQL")"
react="$(unpack "react@$REACT")"
react_dom="$(unpack "react-dom@$REACT")"
graphql_ws="$(unpack "graphql-ws@$GRAPHQL_WS")"

out="$static/graphiql"
mkdir -p "$out"
cp "$graphiql/graphiql.min.js" "$graphiql/graphiql.min.css" "$out/"
cp "$graphiql/LICENSE" "$out/LICENSE.graphiql"
cp "$react/umd/react.production.min.js" "$out/"
cp "$react/LICENSE" "$out/LICENSE.react"
cp "$react_dom/umd/react-dom.production.min.js" "$out/"
cp "$react_dom/LICENSE" "$out/LICENSE.react-dom"
# A release's UMD file ends with a sourceMappingURL the service does not serve.
sed -i '/^\/\/# sourceMappingURL=/d' "$out"/*.min.js

ws="$static/vendor/graphql-ws"
mkdir -p "$ws"
cp "$graphql_ws/lib/client.mjs" "$graphql_ws/lib/common.mjs" "$graphql_ws/lib/utils.mjs" "$ws/"
cp "$graphql_ws/LICENSE.md" "$ws/LICENSE.md"

{
    echo "# Browser files vendored from npm by scripts/vendor-browser-assets.sh; do not edit."
    echo "# package@version, then the registry's integrity hash of the package tarball."
    cat "$versions"
    echo
    echo "# files (bytes):"
    (cd "$static" && find graphiql vendor/graphql-ws -type f \( -name '*.js' -o -name '*.mjs' -o -name '*.css' \) \
        ! -name 'inmail-*' -printf '%p %s\n' | sort)
} >"$static/VERSIONS"
du -ch "$out"/*.min.* "$ws"/*.mjs | tail -1 | sed 's/total/bytes in all (vendored scripts and styles)/'
