"""The scheduler workload: `benchmarks/renewals.py`, run against this run's mongod.

That script (a renewal pass of N members against a raw `insert_many` of as many lots, with the
process's memory during the pass) is the measurement; this module only finds it and calls its
`run_size` for each size. It lives beside `src/` in a checkout, so an installed package without
the checkout skips this workload and says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import inmail

SCRIPT = Path(inmail.__file__).resolve().parents[2] / "benchmarks" / "renewals.py"


def load_renewals() -> ModuleType | None:
    if not SCRIPT.is_file():
        return None
    spec = importlib.util.spec_from_file_location("inmail_bench_renewals", SCRIPT)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def renewal_pass(uri: str, size: int, batch: int) -> dict[str, float]:
    """One size: seed, time the pass, check it, then the insert_many floor (see the script)."""
    renewals = load_renewals()
    if renewals is None:
        raise FileNotFoundError(SCRIPT)
    result: dict[str, Any] = await renewals.run_size(uri, size, batch)
    return {key: float(value) for key, value in result.items()}


def default_batch() -> int:
    from inmail.services.scheduling import DEFAULT_BATCH

    return DEFAULT_BATCH
