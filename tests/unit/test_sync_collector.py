"""The collector thresholds a sync runs with (bridge/engine/sync.py `_fewer_collections`)."""

from __future__ import annotations

import gc
import threading

from bridge.engine.sync import _RUN_GC_THRESHOLDS, _fewer_collections


def test_a_run_raises_the_thresholds_and_the_last_run_puts_them_back() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with _fewer_collections():
            assert gc.get_threshold() == _RUN_GC_THRESHOLDS
            inner_done = threading.Event()

            def other_run() -> None:
                with _fewer_collections():
                    assert gc.get_threshold() == _RUN_GC_THRESHOLDS
                inner_done.set()

            thread = threading.Thread(target=other_run)
            thread.start()
            thread.join()
            assert inner_done.is_set()
            # The other run ended first: this one still runs with the raised thresholds.
            assert gc.get_threshold() == _RUN_GC_THRESHOLDS
        assert gc.get_threshold() == (700, 10, 10)
        # A process that turned the collector off keeps it off.
        gc.set_threshold(0, 10, 10)
        with _fewer_collections():
            assert gc.get_threshold() == (0, 10, 10)
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)
