"""The one walk over nested groups: cycles end it, a limit stops it, levels are batched."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.groups import closure, explore

NODES = st.sampled_from(list("abcdefgh"))
GRAPHS = st.dictionaries(NODES, st.sets(NODES, max_size=4), max_size=8)


def naive_reach(start: set[str], edges: Mapping[str, set[str]]) -> set[str]:
    reached = set(start)
    while True:
        more = {t for n in reached for t in edges.get(n, ())} - reached
        if not more:
            return reached
        reached |= more


def test_a_cycle_ends_the_walk() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert closure({"a"}, edges) == {"a", "b", "c"}
    levels: list[set[str]] = []

    def step(frontier: set[str]) -> dict[str, set[str]]:
        levels.append(set(frontier))
        return {n: edges.get(n, set()) for n in frontier}

    reached, read = explore({"a"}, step)
    assert reached == {"a", "b", "c"} and read == edges
    assert levels == [{"a"}, {"b"}, {"c"}]  # each node expanded once, one call per level


def test_a_limit_stops_the_walk_early() -> None:
    chain = {str(i): {str(i + 1)} for i in range(100)}
    reached, _ = explore({"0"}, lambda f: {n: chain.get(n, set()) for n in f}, limit=5)
    assert 5 < len(reached) < 10


@given(GRAPHS, st.sets(NODES, min_size=1, max_size=3))
def test_both_walks_reach_what_a_naive_fixpoint_reaches(edges: dict[str, set[str]], start: set[str]) -> None:
    expected = naive_reach(start, edges)
    assert closure(start, edges) == expected
    reached, read = explore(start, lambda f: {n: edges.get(n, set()) for n in f})
    assert reached == expected
    assert all(read[n] == edges.get(n, set()) for n in read)
