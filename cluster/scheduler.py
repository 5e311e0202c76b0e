"""Which pending unit an idle actor takes next: pure policy over bookkeeping, no Ray, so it
is tested by simulation.

Locality first: a unit goes preferably to an actor that holds (or is loading) its
checkpoint, then to a checkpoint nobody holds; an idle actor steals from a checkpoint another
actor is working on only when splitting the remaining units saves more than a model load
costs, judged from the unit and load times measured so far.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from cluster.plan import Unit
from cluster.results.layout import ActorInfo


class Scheduler:
    """Which pending unit an actor should take next. Pure bookkeeping, no Ray."""

    def __init__(self, units: list[Unit]):
        self.pending: OrderedDict[str, deque[Unit]] = OrderedDict()
        for unit in units:
            self.pending.setdefault(unit.checkpoint, deque()).append(unit)
        self._unit_seconds: list[float] = []
        self._load_seconds: list[float] = []
        self._dropped: set[str] = set()

    def remaining(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def requeue(self, unit: Unit) -> None:
        if unit.checkpoint not in self._dropped:
            self.pending.setdefault(unit.checkpoint, deque()).appendleft(unit)

    def drop(self, checkpoint: str) -> list[Unit]:
        """Give up a checkpoint: its pending units are removed and returned, and none of its
        units is handed out again, even if requeued later."""
        self._dropped.add(checkpoint)
        return list(self.pending.pop(checkpoint, ()))

    def replace(self, checkpoint: str, units: list[Unit]) -> None:
        """A checkpoint planned again: `units` instead of whatever of it was pending (or dropped)."""
        self._dropped.discard(checkpoint)
        self.pending[checkpoint] = deque(units)

    def observe(self, unit_s: float, load_s: float | None) -> None:
        """Measured costs (a unit's work; its model load, if it paid one) drive stealing."""
        self._unit_seconds.append(unit_s)
        if load_s is not None:
            self._load_seconds.append(load_s)

    def next_for(self, actor: ActorSlot, others: list[ActorSlot]) -> Unit | None:
        """The unit `actor` should take next, given what the other actors hold and do:
        1. one of a checkpoint it holds or is loading (newest first);
        2. one of a checkpoint no other actor holds;
        3. one of a checkpoint held elsewhere but not being worked on there;
        4. one of the checkpoint with most units left that another actor is working on, if
           splitting those units saves more time than loading the model costs."""
        busy = {unit.checkpoint for other in others for unit in other.in_flight.values()}
        held = busy | {name for other in others for name in other.cached}
        for name in actor.holds():
            if self.pending.get(name):
                return self._pop(name)
        live = [name for name, queue in self.pending.items() if queue]
        for name in live:
            if name not in held:
                return self._pop(name)
        for name in live:
            if name not in busy:
                return self._pop(name)
        if live:
            most = max(live, key=lambda name: len(self.pending[name]))
            if self._worth_stealing(len(self.pending[most])):
                return self._pop(most)
        return None

    def _worth_stealing(self, pending_units: int) -> bool:
        """Splitting n remaining units between two actors saves ~n/2 unit times and costs one
        model load. Before anything is measured, take the work."""
        if not self._unit_seconds or not self._load_seconds:
            return True
        unit_s = sum(self._unit_seconds) / len(self._unit_seconds)
        load_s = sum(self._load_seconds) / len(self._load_seconds)
        return pending_units * unit_s / 2 > load_s

    def _pop(self, name: str) -> Unit:
        return self.pending[name].popleft()


@dataclass
class ActorSlot:
    key: int
    handle: Any  # ray.actor.ActorHandle
    ready: Any | None  # ObjectRef of the readiness probe, None once ready
    info: ActorInfo | None = None
    cached: list[str] = field(default_factory=list)  # as the actor last reported, LRU first
    in_flight: dict[Any, Unit] = field(default_factory=dict)  # ObjectRef -> unit, in dispatch order

    def holds(self) -> list[str]:
        """Checkpoints it is working on (newest dispatch first), then those it caches (MRU first)."""
        working = [unit.checkpoint for unit in reversed(self.in_flight.values())]
        return list(dict.fromkeys(working + self.cached[::-1]))
