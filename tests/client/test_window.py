"""The sliding window's totals equal a plain recount of the last window's additions, at any pace."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from grpcmesh.client.window import SlidingWindow

WINDOW, BUCKETS = 10.0, 20
WIDTH = WINDOW / BUCKETS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 3), st.booleans()), min_size=1, max_size=200))
def test_totals_match_a_recount_of_the_buckets_still_in_the_window(steps: list[tuple[float, int, bool]]) -> None:
    now = 1000.0
    window = SlidingWindow(WINDOW, BUCKETS, clock=lambda: now)
    added: list[tuple[int, float, float]] = []  # (bucket index, a, b)
    for gap, amount, pass_now in steps:
        now += gap
        window.add(amount, 1.0, now if pass_now else None)
        added.append((math.floor(now / WIDTH), float(amount), 1.0))
        current = math.floor(now / WIDTH)
        expected_a = sum(a for index, a, _ in added if index > current - BUCKETS)
        expected_b = sum(b for index, _, b in added if index > current - BUCKETS)
        got_a, got_b = window.totals(now if pass_now else None)
        assert math.isclose(got_a, expected_a, abs_tol=1e-9)
        assert math.isclose(got_b, expected_b, abs_tol=1e-9)
