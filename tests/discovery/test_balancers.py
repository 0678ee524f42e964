"""Balancer policies on their own: distributions, smoothness, exclusion, remapping."""

from __future__ import annotations

import collections
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpcmesh import ConfigError, ServiceInstance
from grpcmesh.discovery import Endpoint, make_balancer
from grpcmesh.discovery.balancers import POLICIES, ConsistentHash, PowerOfTwoChoices, RoundRobin, WeightedRoundRobin


def endpoints(*weights: int) -> list[Endpoint]:
    return [
        Endpoint.from_instance(ServiceInstance(name="svc", id=f"e{i}", address="127.0.0.1", port=1000 + i, weight=w))
        for i, w in enumerate(weights)
    ]


def test_round_robin_cycles_through_every_endpoint() -> None:
    rr = RoundRobin()
    rr.update(endpoints(1, 1, 1, 1))
    picks = [rr.pick() for _ in range(400)]
    assert all(p is not None for p in picks)
    counts = collections.Counter(p.id for p in picks if p)
    assert set(counts.values()) == {100}
    window = [p.id for p in picks[:4] if p]
    assert len(set(window)) == 4


def test_weighted_round_robin_is_exact_and_smooth() -> None:
    wrr = WeightedRoundRobin()
    wrr.update(endpoints(5, 1, 1))
    sequence = "".join({"e0": "a", "e1": "b", "e2": "c"}[p.id] for p in (wrr.pick() for _ in range(7)) if p)
    assert sequence.count("a") == 5
    assert sequence.count("b") == 1
    assert sequence.count("c") == 1
    assert "aaaa" not in sequence  # interleaved, as nginx's smooth WRR, not a burst of a's


@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8))
def test_weighted_round_robin_matches_weights_over_each_cycle(weights: list[int]) -> None:
    wrr = WeightedRoundRobin()
    wrr.update(endpoints(*weights))
    total = sum(weights)
    counts = collections.Counter(p.id for p in (wrr.pick() for _ in range(total * 3)) if p)
    for i, w in enumerate(weights):
        assert counts[f"e{i}"] == 3 * w


def test_weighted_round_robin_keeps_schedule_for_remaining_endpoints() -> None:
    wrr = WeightedRoundRobin()
    eps = endpoints(1, 2, 3)
    wrr.update(eps)
    for _ in range(5):
        wrr.pick()
    wrr.update(eps[1:])
    counts = collections.Counter(p.id for p in (wrr.pick() for _ in range(50)) if p)
    assert counts["e0"] == 0
    assert abs(counts["e1"] - 20) <= 1
    assert abs(counts["e2"] - 30) <= 1


def test_p2c_prefers_the_endpoint_with_fewer_outstanding_and_lower_latency() -> None:
    now = [0.0]
    p2c = PowerOfTwoChoices(clock=lambda: now[0], force_pick_after=1e9)
    fast, slow = endpoints(1, 1)
    p2c.update([fast, slow])
    for _ in range(5):
        p2c.call_started(fast)
        p2c.call_finished(fast, 0.001, True)
        p2c.call_started(slow)
        p2c.call_finished(slow, 0.200, True)
    picks = collections.Counter(p.id for p in (p2c.pick() for _ in range(100)) if p)
    assert picks[fast.id] == 100
    for _ in range(30):
        p2c.call_started(fast)  # fast endpoint now has a long queue
    picks = collections.Counter(p.id for p in (p2c.pick() for _ in range(100)) if p)
    assert picks[slow.id] == 100


def test_p2c_force_picks_a_starved_endpoint() -> None:
    now = [0.0]
    p2c = PowerOfTwoChoices(clock=lambda: now[0], force_pick_after=1.0)
    fast, slow = endpoints(1, 1)
    p2c.update([fast, slow])
    p2c.call_started(slow)
    p2c.call_finished(slow, 5.0, False)
    now[0] = 2.0
    assert p2c.pick() == slow  # not picked for 2 s: its estimate must be refreshed
    assert p2c.pick() == fast


def test_consistent_hash_without_key_spreads_calls() -> None:
    ch = ConsistentHash()
    ch.update(endpoints(1, 1, 1))
    counts = collections.Counter(p.id for p in (ch.pick(None) for _ in range(300)) if p)
    assert set(counts.values()) == {100}


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=2, max_value=8),
    st.integers(min_value=0, max_value=7),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True),
)
def test_consistent_hash_moves_only_the_keys_of_a_leaving_endpoint(count: int, leaving: int, keys: list[str]) -> None:
    eps = endpoints(*([1] * count))
    gone = eps[leaving % count]
    ch = ConsistentHash(vnodes=40)
    ch.update(eps)
    before = {k: ch.pick(k) for k in keys}
    ch.update([e for e in eps if e != gone])
    after = {k: ch.pick(k) for k in keys}
    for key in keys:
        assert after[key] != gone
        if before[key] != gone:
            assert after[key] == before[key]


def test_consistent_hash_splits_keys_roughly_evenly() -> None:
    ch = ConsistentHash()
    ch.update(endpoints(1, 1, 1))
    counts = collections.Counter(p.id for p in (ch.pick(f"k{i}") for i in range(3000)) if p)
    assert all(700 <= c <= 1300 for c in counts.values()), counts


@pytest.mark.parametrize("policy", sorted(POLICIES))
@given(data=st.data())
def test_every_policy_honours_exclude_and_empty_sets(policy: str, data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=1, max_value=6))
    eps = endpoints(*data.draw(st.lists(st.integers(1, 10), min_size=count, max_size=count)))
    excluded = data.draw(st.sets(st.sampled_from([e.id for e in eps])))
    balancer = make_balancer(policy)
    assert balancer.pick("key") is None
    balancer.update(eps)
    for key in itertools.islice(itertools.cycle(["a", None, "b"]), 12):
        picked = balancer.pick(key, excluded)
        if len(excluded) == len(eps):
            assert picked is None
        else:
            assert picked is not None
            assert picked.id not in excluded
            assert picked in eps


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"policy: unknown load-balancing policy 'fastest'.*round_robin"):
        make_balancer("fastest")
