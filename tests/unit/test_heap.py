"""The garbage collector of a serving process: tuned once its app has started, restored after."""

from __future__ import annotations

import gc

from inmail.app import create_app
from inmail.heap import YOUNG_THRESHOLD, tuned_gc
from inmail.repositories.memory import InMemoryMongo
from support import test_settings as settings_for_tests


def test_tuned_gc_freezes_what_is_alive_and_restores_the_collector_after() -> None:
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    with tuned_gc():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_a_serving_app_tunes_the_collector_while_it_runs_and_no_other_app_does() -> None:
    default = gc.get_threshold()
    for serving, expected in ((False, default), (True, (YOUNG_THRESHOLD, *default[1:]))):
        settings = settings_for_tests()
        app = create_app(settings, mongo=InMemoryMongo("heap"), serving=serving)
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == expected
        assert gc.get_threshold() == default
        assert gc.get_freeze_count() == 0
