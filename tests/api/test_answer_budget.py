"""A caller's unread large answers are held to a budget (SECURITY.md): an answer that would
take its caller past it, as requests that ran side by side may, is not held. A query's is
refused (503, to ask again); a mutation's is replaced by an error that says the mutation was
applied (asking again could apply it twice). Nothing stays held once the answer is out.

The budget is made small here (the process's is twice INMAIL_MAX_RESPONSE_BYTES), so that one
answer passes it; the check made before a request runs keeps its own, larger threshold.
"""

from __future__ import annotations

from starlette.routing import Route

from inmail.endpoint.answers import HELD_ANSWER_BYTES
from inmail.endpoint.view import GraphQLApp
from inmail.resolvers.cost import CostHolders
from support import Api, Person, send_message

THREAD = " ".join(f"m{i}: messages {{ body }}" for i in range(2))  # about 160 KB


def graphql_app(api: Api) -> GraphQLApp:
    assert api.app is not None
    (found,) = [
        route.app
        for route in api.app.routes
        if isinstance(route, Route) and route.path == "/graphql"
    ]
    assert isinstance(found, GraphQLApp)
    return found


async def thread_of_40(api: Api) -> tuple[Person, Person, str]:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    await api.connect(ada, grace)
    sent = await send_message(api, ada, "x" * 2000, recipient=grace)
    conversation_id = str(sent["conversation"]["id"])
    for _ in range(39):
        await send_message(api, ada, "x" * 2000, conversation_id=conversation_id)
    return ada, grace, conversation_id


async def test_past_the_budget_a_querys_answer_is_refused_and_a_mutations_says_it_was_applied(
    api: Api,
) -> None:
    ada, _, conversation_id = await thread_of_40(api)
    app = graphql_app(api)
    app.answers.held = CostHolders(2 * HELD_ANSWER_BYTES)  # less than one answer here
    query = f'{{ node(id: "{conversation_id}") {{ ... on Conversation {{ {THREAD} }} }} }}'
    mutation = (
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) "
        f"{{ conversation {{ {THREAD} }} errors {{ code }} }} }}"
    )
    sent = {"i": {"conversationId": conversation_id, "body": "One more."}}

    refused = await api.post(query, token=ada.token)
    answered = await api.post(mutation, sent, ada.token)

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["cache-control"] == "no-store"
    assert [e["extensions"]["code"] for e in refused.json()["errors"]] == ["SERVICE_UNAVAILABLE"]
    assert answered.status_code == 200
    assert answered.json()["data"] is None  # it ran (graphql-response+json: 2xx with `data`)
    (withheld,) = answered.json()["errors"]
    assert withheld["extensions"] == {"code": "RESPONSE_TOO_LARGE", "applied": True}
    assert withheld["message"].startswith("The mutation was applied, but its answer (")
    thread = await api.gql(
        f'{{ node(id: "{conversation_id}") {{ ... on Conversation {{ messages {{ body }} }} }} }}',
        token=ada.token,
    )
    assert thread["node"]["messages"][-1] == {"body": "One more."}  # it was
    assert app.answers.held.held_by(ada.id) == 0  # nothing held


async def test_within_the_budget_a_large_answer_is_sent_whole_and_given_back(api: Api) -> None:
    ada, _, conversation_id = await thread_of_40(api)
    app = graphql_app(api)
    query = f'{{ node(id: "{conversation_id}") {{ ... on Conversation {{ {THREAD} }} }} }}'

    answered = await api.post(query, token=ada.token)

    assert answered.status_code == 200
    assert len(answered.content) == int(answered.headers["content-length"])
    assert [len(answered.json()["data"]["node"][f"m{i}"]) for i in range(2)] == [40, 40]
    assert app.answers.held.held_by(ada.id) == 0
