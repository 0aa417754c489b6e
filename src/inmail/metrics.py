"""Prometheus metrics: defined once here, updated where things happen, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "inmail_graphql_requests_total", "GraphQL operations served", ["operation", "outcome"]
)
REQUEST_SECONDS = Histogram(
    "inmail_graphql_request_seconds", "Time to serve a GraphQL operation", ["operation"]
)
INMAILS_SENT = Counter("inmail_inmails_sent_total", "InMails sent (one credit each)")
CREDITS = Counter(
    "inmail_credits_total",
    "Credits moved, by ledger kind (GRANT, DEBIT, CREDIT_BACK, EXPIRE, FORFEIT)",
    ["kind"],
)
SCHEDULER_PASS_SECONDS = Histogram(
    "inmail_scheduler_pass_seconds", "Duration of one scheduler pass", ["job"]
)
SCHEDULER_LAG_SECONDS = Gauge(
    "inmail_scheduler_lag_seconds",
    "How far behind the oldest due item was when the last pass started",
    multiprocess_mode="mostrecent",  # with several workers: the pass that ran last
)
SUBSCRIBERS = Gauge(
    "inmail_subscribers",
    "Live balance subscriptions connected to this process",
    multiprocess_mode="livesum",
)
