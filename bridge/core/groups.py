"""Walking nested groups, in one place: every caller (the snapshot's expansion, the delta's
membership resolver, stored effective groups, SCIM's group-to-users walk) needs the same cycle
guard, because directories and identity providers do send A-in-B-in-A.

Pure: the graph comes in as a mapping or as a lookup function (`step`), which for the store is one
query per level of nesting, never one per node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

Step = Callable[[set[str]], Mapping[str, Iterable[str]]]


def explore(start: Iterable[str], step: Step, *, limit: int | None = None) -> tuple[set[str], dict[str, set[str]]]:
    """Breadth-first from `start`, a level at a time: `step(frontier)` gives each node's
    neighbours. Returns every node reached (`start` included) and the edges read. Each node is
    expanded once, so a cycle ends the walk; with `limit`, it stops once more nodes are reached."""
    reached = set(start)
    edges: dict[str, set[str]] = {}
    frontier = set(reached)
    while frontier and (limit is None or len(reached) <= limit):
        found = step(frontier)
        following: set[str] = set()
        for node, neighbours in found.items():
            targets = edges.setdefault(node, set())
            targets.update(neighbours)
            following |= targets
        frontier = following - reached
        reached |= frontier
    return reached, edges


def closure(start: Iterable[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
    """`start` and every node reachable from it over `edges` (cycle-safe)."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(edges.get(current, ()))
    return seen
