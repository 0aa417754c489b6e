"""The service answers the public queries, over HTTP, backed by a real mongod."""

from __future__ import annotations

from support import Api


async def test_plans_and_now_answer_without_a_token(api: Api) -> None:
    data = await api.gql("{ plans { type monthlyAllotment maxBalance } now }")
    plans = {p["type"]: (p["monthlyAllotment"], p["maxBalance"]) for p in data["plans"]}
    assert plans["PREMIUM_CAREER"] == (5, 15)
    assert plans["RECRUITER_LITE"] == (30, 90)
    assert plans["BASIC"] == (0, 0)
    assert data["now"] == "2026-01-15T09:00:00Z"


async def test_a_new_premium_member_sees_their_first_allotment_at_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    data = await api.gql("{ viewer { id name inmailBalance plan { type } } }", token=ada.token)
    assert data["viewer"] == {
        "id": ada.id,
        "name": "Ada Lovelace",
        "inmailBalance": 5,
        "plan": {"type": "PREMIUM_CAREER"},
    }
