"""Webhook signatures, payloads, the backoff schedule and the webhook settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inmail.domain.outbox import OutboxEvent
from inmail.services.webhooks import Backoff, payload, sign, verify_signature
from inmail.settings import Settings, SettingsError

SECRET = "whsec-lighthouse-keeper-0123456789abcdef"
BODY = b'{"id":"65f0c0ffee","kind":"INMAIL_RECEIVED","memberId":"ada"}'
T = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_a_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_a_fresh_signature_over_the_exact_body_verifies() -> None:
    header = sign(SECRET, BODY, T)
    assert verify_signature(SECRET, header, BODY, now=T + 10)
    assert verify_signature(SECRET, header, BODY, now=T - 10)


def test_a_changed_body_a_wrong_secret_or_a_forged_timestamp_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify_signature(SECRET, header, BODY.replace(b"ada", b"eve"), now=T)
    assert not verify_signature("another-secret-of-thirty-two-chars!!", header, BODY, now=T)
    forged = header.replace(f"t={T}", f"t={T + 60}")
    assert not verify_signature(SECRET, forged, BODY, now=T + 60)


def test_a_replay_older_than_the_tolerance_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    assert verify_signature(SECRET, header, BODY, now=T + 300)
    assert not verify_signature(SECRET, header, BODY, now=T + 301)
    assert not verify_signature(SECRET, header, BODY, now=T - 301)
    assert verify_signature(SECRET, header, BODY, now=T + 3600, tolerance=3600)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={T}",
        "v1=abc",
        f"t=-{T},v1=abc",
        f"t={T}x,v1=abc",
        "t=,v1=",
        "t=\u00b2,v1=00",  # a digit to str.isdigit(), not to int()
        "t=\u2075\u2075,v1=00",
        f"t={T},v1=\u00e9\u00e9",  # a signature no string comparison takes
    ],
)
def test_a_malformed_header_is_refused_without_an_error(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, now=T)


def test_any_of_several_signatures_may_match_while_a_secret_is_replaced() -> None:
    old = sign("the-old-secret-of-thirty-two-characters", BODY, T).split(",")[1]
    new = sign(SECRET, BODY, T).split(",")[1]
    assert verify_signature(SECRET, f"t={T},{old},{new}", BODY, now=T)
    assert not verify_signature(SECRET, f"t={T},{old}", BODY, now=T)


def test_the_payload_carries_id_kind_member_time_and_data() -> None:
    event = OutboxEvent(
        id="65f0c0ffee",
        kind="INMAIL_RECEIVED",
        member_id="grace-hopper",
        at=datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
        data={"conversationId": "c-1", "sentAt": datetime(2026, 1, 15, 9, 29, tzinfo=UTC)},
    )
    assert json.loads(payload(event)) == {
        "id": "65f0c0ffee",
        "kind": "INMAIL_RECEIVED",
        "memberId": "grace-hopper",
        "at": "2026-01-15T09:30:00Z",
        "data": {"conversationId": "c-1", "sentAt": "2026-01-15T09:29:00Z"},
    }


def test_the_backoff_doubles_from_ten_seconds_up_to_an_hour() -> None:
    backoff = Backoff()
    no_jitter = [backoff.delay(n, rand=lambda: 0.0).total_seconds() for n in range(1, 13)]
    assert no_jitter == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
    assert backoff.delay(10_000, rand=lambda: 0.0) == timedelta(hours=1)


def test_jitter_shortens_a_delay_by_at_most_a_fifth() -> None:
    backoff = Backoff()
    assert backoff.delay(3, rand=lambda: 1.0) == timedelta(seconds=32)
    assert backoff.delay(3, rand=lambda: 0.5) == timedelta(seconds=36)


def test_retries_go_on_until_the_event_is_a_day_old_and_then_stop() -> None:
    backoff = Backoff()
    at = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    now, failures, tries = at, 0, []
    while True:
        failures += 1
        tries.append(now)
        retry = backoff.retry_at(at, now, failures)
        if retry is None:
            break
        assert retry > now
        now = retry
    assert tries[-1] - at >= timedelta(hours=24)
    assert tries[-2] - at < timedelta(hours=24)
    assert tries[-1] - at < timedelta(hours=25)
    assert 25 <= failures <= 45


@pytest.mark.parametrize(
    "backoff",
    [Backoff(), Backoff(first=timedelta(seconds=1), cap=timedelta(minutes=5), jitter=0.5)],
    ids=["default", "short"],
)
@pytest.mark.parametrize("shortening", [1.0, 0.5, 0.0])
def test_no_schedule_makes_more_attempts_than_most_attempts(
    backoff: Backoff, shortening: float
) -> None:
    """`most_attempts()` bounds the attempts the schedule makes for an event (the outbox keeps
    twice that), the shortest delays (full jitter) reaching it exactly."""
    at = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    now, attempts = at, 1
    while (retry := backoff.retry_at(at, now, attempts, rand=lambda: shortening)) is not None:
        now, attempts = retry, attempts + 1
    assert attempts <= backoff.most_attempts()
    if shortening == 1.0:
        assert attempts == backoff.most_attempts()


def test_a_webhook_url_needs_a_secret_and_a_real_http_address() -> None:
    url = "https://hooks.example.com/inmail"
    with pytest.raises(SettingsError, match="INMAIL_WEBHOOK_SECRET"):
        Settings.from_env({"INMAIL_WEBHOOK_URL": url})
    with pytest.raises(SettingsError, match="INMAIL_WEBHOOK_SECRET"):
        Settings.from_env({"INMAIL_WEBHOOK_URL": url, "INMAIL_WEBHOOK_SECRET": "short"})
    for bad in ("ftp://hooks.example.com/", "hooks.example.com/inmail", "https://", "http:///x"):
        with pytest.raises(SettingsError, match="INMAIL_WEBHOOK_URL"):
            Settings.from_env({"INMAIL_WEBHOOK_URL": bad, "INMAIL_WEBHOOK_SECRET": SECRET})
    settings = Settings.from_env(
        {
            "INMAIL_WEBHOOK_URL": url,
            "INMAIL_WEBHOOK_SECRET": SECRET,
            "INMAIL_WEBHOOK_TIMEOUT": "2.5",
        }
    )
    assert (settings.webhook_url, settings.webhook_secret) == (url, SECRET)
    assert settings.webhook_timeout == 2.5
    assert Settings.from_env({}).webhook_url is None


def test_the_secret_is_not_shown_in_a_settings_error() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"INMAIL_WEBHOOK_SECRET": "tiny-but-secret"})
    assert "tiny-but-secret" not in str(error.value)


def test_the_readme_receiver_accepts_a_signed_event_once_and_refuses_forgeries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Webhooks") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```\n", start)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    secret = namespace["SECRET"].decode()
    body = payload(
        OutboxEvent("65f0c0ffee", "REMINDER", "ada", datetime(2026, 1, 17, 9, tzinfo=UTC))
    )
    fresh = {"InMail-Signature": sign(secret, body, int(time.time()))}
    assert namespace["receive"](fresh, body) == 200
    assert namespace["receive"](fresh, body) == 200  # a redelivery is acknowledged, not redone
    assert capsys.readouterr().out.count("REMINDER") == 1
    lowercase = {"inmail-signature": fresh["InMail-Signature"]}  # as ASGI servers give names
    assert namespace["receive"](lowercase, body) == 200
    assert namespace["receive"](fresh, body.replace(b"ada", b"eve")) == 400
    stale = {"InMail-Signature": sign(secret, body, int(time.time()) - 600)}
    assert namespace["receive"](stale, body) == 400
    assert namespace["receive"]({}, body) == 400
    hostile_headers = (
        "t=\u00b2,v1=00",
        f"t={int(time.time())},v1=\u00e9",
        "t=" + "9" * 5000 + ",v1=00",  # past int()'s limit on digits
        "t=1" + "0" * 400 + ",v1=00",  # past what a float holds
    )
    for hostile in hostile_headers:
        assert namespace["receive"]({"InMail-Signature": hostile}, body) == 400
    # Two timestamps, one of them signed: refused here as by the service's own check.
    now = int(time.time())
    signed = sign(secret, body, now)
    for doubled in (f"t={now - 1000},{signed}", f"{signed},t={now - 1000}"):
        assert namespace["receive"]({"InMail-Signature": doubled}, body) == 400
        assert not verify_signature(secret, doubled, body, now=now)
