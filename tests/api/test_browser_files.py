"""The browser files the service serves itself: GraphiQL's page and assets, the web client."""

from __future__ import annotations

import re

from support import Api, open_api
from support import test_settings as settings_with


async def test_graphiql_asks_only_this_origin_for_its_scripts_and_styles(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name, settings_with(graphiql=True)) as api:
        page = await api.browse()
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert "/static/graphiql/graphiql.min.js" in sources
        for source in sources:
            assert source.startswith(("/static/", "data:")), source
            if source.startswith("/static/"):
                asset = await api.client.get(source)
                assert asset.status_code == 200, source
                assert asset.headers["x-content-type-options"] == "nosniff"
                # Unversioned names: asked again each time, answered 304 when unchanged.
                assert asset.headers["cache-control"] == "no-cache"
                again = await api.client.get(
                    source, headers={"If-None-Match": asset.headers["etag"]}
                )
                assert again.status_code == 304, source


async def test_production_serves_the_web_client_but_not_graphiql(
    mongodb_uri: str, db_name: str
) -> None:
    settings = settings_with(env="production", clock="system", clock_start=None, graphiql=False)
    async with open_api(mongodb_uri, db_name, settings) as api:
        ide = await api.browse()
        assert ide.status_code == 400
        # No page, and the answer says why, for whoever opened the endpoint in a browser.
        assert "<html" not in ide.text.lower()
        assert (
            "GraphiQL is off on this server: INMAIL_GRAPHIQL" in ide.json()["errors"][0]["message"]
        )
        client = await api.client.get("/app")
        assert client.status_code == 200
        assert "inmail token --member" in client.text
        assert "connect-src 'self'" in client.headers["content-security-policy"]
        module = await api.client.get("/static/vendor/graphql-ws/client.mjs")
        assert module.headers["content-type"].startswith("text/javascript")
        assert (await api.client.get("/static/../settings.py")).status_code == 404


async def test_the_web_client_opened_from_the_static_folder_runs_under_the_same_policy(
    api: Api,
) -> None:
    page = await api.client.get("/static/app/index.html")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert policy == (await api.client.get("/app")).headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy


async def test_every_answer_says_what_it_is_and_no_graphql_answer_is_kept_by_a_cache(
    api: Api,
) -> None:
    for path in ("/graphql?query={now}", "/healthz", "/no-such-path", "/static/app/app.js"):
        answer = await api.client.get(path, headers={"accept": "application/json"})
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], path
    for answer in (
        await api.client.get("/graphql", params={"query": "{ now }"}),
        await api.client.post("/graphql", json={"query": "{ now }"}),
        await api.client.post(
            "/graphql", content=b"{", headers={"content-type": "application/json"}
        ),
    ):
        assert answer.headers["cache-control"] == "no-store", answer.request
    page = await api.client.get("/static/app/index.html")
    assert page.headers["referrer-policy"] == "no-referrer"
