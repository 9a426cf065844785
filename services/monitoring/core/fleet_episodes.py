"""Fleet episodes: a drift seen in many partitions of a fleet at once (a city-wide change) is one
episode, published once as DriftDetected(model=FLEET, partitions=[...]), so that training refits
the global model and those partitions as one coordinated run instead of one run per partition.

Pure domain logic; the event handler feeds it partition decisions and publishes what it releases
(at once, and from a timer: `due`). The timing, per fleet F:
- A partition's decision is held `hold_s` (a short delay: the other partitions of a city-wide
  change decide within seconds of each other when their traffic is alike). Decisions held
  together form a batch that ends `hold_s` after its first one.
- When the batch ends, partition decisions of F within the last `window_s` (the batch's and
  those published alone lately) are counted against F's quorum, max(min_partitions,
  ceil(fraction x the partitions of F monitored here)). At the quorum, with at least
  min_partitions in the batch, the batch goes out as ONE fleet episode; else each of its
  decisions goes out on its own as DriftDetected(model=P), as every decision did before
  fleets, `hold_s` late. Decisions already published alone keep their own run (they are not
  listed again in a fleet episode that follows).
- While that fleet episode is open (for the policy's episode_timeout_s from its opening, also
  after F's global model deployed a new version: a city-wide change reaches partitions at the
  pace of their own labelled traffic, each at 1/N of the false-alarm budget, so over minutes,
  not within `window_s`), it GROWS: F's later partition decisions are held `hold_s` and go out
  as a follow-up DriftDetected with the SAME episode id, listing only them (any number, even
  one: the global model is not refitted again). Training queues one run per listed partition
  with an id derived from the episode's (fleet_runs.child_episode), so a follow-up adds those
  runs only, and a redelivered one adds none. A partition already listed in the open episode
  that decides again (its new version still drifts) goes out on its own, as a new episode: it
  must not be absorbed into the run it already had.
A partition in a fleet episode does not alarm again on its own: its monitor opened its own
episode when it decided (muted until its next deployment or episode_timeout_s, monitor.py), and
the handler stamps that episode with the fleet episode's id (a restart resumes it from the drift
history, which lists the fleet episode's partitions). Held decisions live in memory only: a
crash while they wait loses them, and the still-drifted partitions decide again on fresh rows
after the restart; a clean stop publishes them (`flush`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from driftloop.services.monitoring.core.decision import DriftDecision, DriftEpisode
from driftloop.services.monitoring.core.drift import FeatureDrift

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FleetEpisodeRules:
    """When partition decisions become a fleet episode (MonitoringSettings documents each)."""

    hold_s: float = 5.0
    window_s: float = 60.0
    min_partitions: int = 3
    fraction: float = 0.1
    episode_s: float = 600.0

    def quorum(self, monitored: int) -> int:
        return max(self.min_partitions, math.ceil(self.fraction * monitored))


@dataclass
class _FleetState:
    held: list[tuple[float, DriftDecision]] = field(default_factory=list)
    recent: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)
    open: DriftEpisode | None = None
    members: set[str] = field(default_factory=set)
    """The partitions listed so far in the open episode (its first decision and follow-ups)."""


class FleetEpisodes:
    """Partition decisions held per fleet, released alone or grouped into fleet episodes."""

    def __init__(
        self,
        rules: FleetEpisodeRules,
        *,
        monitored: Callable[[str], int],
        version: Callable[[str], str],
    ) -> None:
        """`monitored(fleet)`: its partitions monitored here; `version(fleet)`: its global
        model's version in force ("" when it has none)."""
        self.rules = rules
        self._monitored = monitored
        self._version = version
        self._fleets: dict[str, _FleetState] = {}

    def hold(self, fleet: str, decision: DriftDecision, now: float) -> list[DriftDecision]:
        """Hold a partition's decision; what goes out now (batches whose hold is over)."""
        state = self._fleets.setdefault(fleet, _FleetState())
        state.held.append((now, decision))
        state.recent.append((now, decision.model))
        return self._release(fleet, state, now)

    def due(self, now: float) -> list[DriftDecision]:
        """Decisions whose hold is over (alone or grouped); call it every second or so."""
        out = []
        for fleet, state in list(self._fleets.items()):
            out += self._release(fleet, state, now)
            if not state.held and not state.recent and state.open is None:
                del self._fleets[fleet]
        return out

    def flush(self, now: float) -> list[DriftDecision]:
        """Everything held, now (a clean stop): grouped where the quorum holds, else alone."""
        out = []
        for fleet, state in self._fleets.items():
            out += self._release(fleet, state, now, ended=True)
            out += [d for _, d in state.held]
            state.held.clear()
        return out

    def held(self, fleet: str) -> list[str]:
        state = self._fleets.get(fleet)
        return [d.model for _, d in state.held] if state else []

    def open_episode(self, fleet: str, now: float) -> DriftEpisode | None:
        state = self._fleets.get(fleet)
        if state is None or state.open is None:
            return None
        return state.open if now - state.open.opened_at < self.rules.episode_s else None

    def resume(
        self, fleet: str, episode_id: str, opened_at: float, partitions: Sequence[str] = ()
    ) -> None:
        """A fleet episode recorded before a restart (from the drift history: one entry per
        DriftDetected, its follow-ups sharing its id; the earliest is the opening)."""
        state = self._fleets.setdefault(fleet, _FleetState())
        if state.open is not None and state.open.episode_id == episode_id:
            if opened_at < state.open.opened_at:
                state.open = DriftEpisode(episode_id, opened_at)
            state.members.update(partitions)
        elif state.open is None or state.open.opened_at < opened_at:
            state.open = DriftEpisode(episode_id, opened_at)
            state.members = set(partitions)

    def close(self, fleet: str) -> None:
        """The fleet's global model deployed a new version. The fleet episode stays open for
        partitions that drift later (see the module docstring) until episode_timeout_s: the
        change that opened it is still reaching them."""
        state = self._fleets.get(fleet)
        if state is not None and state.open is not None:
            log.info(
                "fleet_global_deployed_episode_open",
                fleet=fleet,
                episode_id=state.open.episode_id,
            )

    def _release(
        self, fleet: str, state: _FleetState, now: float, *, ended: bool = False
    ) -> list[DriftDecision]:
        """What goes out of the fleet's batch at `now` (`ended`: as if its hold were over)."""
        rules = self.rules
        while state.recent and state.recent[0][0] <= now - rules.window_s:
            state.recent.popleft()
        if state.open is not None and now - state.open.opened_at >= rules.episode_s:
            state.open, state.members = None, set()
        if state.open is not None:
            return self._follow_up(fleet, state, now, ended)
        if not state.held or (state.held[0][0] + rules.hold_s > now and not ended):
            return []  # the batch is still gathering
        drifted = len({partition for _, partition in state.recent})
        quorum = drifted >= rules.quorum(self._monitored(fleet))
        if quorum and len(state.held) >= rules.min_partitions:
            return [self._group(fleet, state, now)]
        alone = [d for at, d in state.held if at + rules.hold_s <= now]
        state.held = [(at, d) for at, d in state.held if at + rules.hold_s > now]
        return alone

    def _follow_up(
        self, fleet: str, state: _FleetState, now: float, ended: bool
    ) -> list[DriftDecision]:
        """The open episode grows: held decisions go out after `hold_s` as one follow-up with
        the episode's id; a partition it already lists goes out alone (a new episode)."""
        if not state.held or (state.held[0][0] + self.rules.hold_s > now and not ended):
            return []
        assert state.open is not None
        joiners = [d for _, d in state.held if d.model not in state.members]
        again = [d for _, d in state.held if d.model in state.members]
        state.held.clear()
        if not joiners:
            return again
        grown = fleet_decision(fleet, self._version(fleet), joiners, now)
        grown = dataclasses.replace(
            grown,
            episode_id=state.open.episode_id,
            reasons=(f"joins fleet episode {state.open.episode_id}", *grown.reasons),
        )
        state.members.update(d.model for d in joiners)
        return [grown, *again]

    def _group(self, fleet: str, state: _FleetState, now: float) -> DriftDecision:
        members = [d for _, d in state.held]
        state.held.clear()
        decision = fleet_decision(fleet, self._version(fleet), members, now)
        state.open = DriftEpisode(decision.episode_id, now)
        state.members = {d.model for d in members}
        return decision


def fleet_decision(
    fleet: str, version: str, members: Sequence[DriftDecision], now: float
) -> DriftDecision:
    """One decision for partitions that drifted together: the strongest evidence per test,
    the windows' span, and a line per drifted column saying in how many partitions."""
    features, counts = _strongest(members)
    span = max(d.decided_at for d in members) - min(d.decided_at for d in members)
    names = [d.model for d in members]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    reasons = [
        f"{len(members)} partitions of fleet {fleet} drifted within {span:.0f} s: {shown}",
        *(
            f"{'predictions' if f.feature == '_prediction' else repr(f.feature)} drifted in "
            f"{counts[f.feature]} of them (strongest: {f.test} {f.statistic:.3g})"
            for f in features
            if f.drifted
        ),
    ]
    return DriftDecision(
        model=fleet,
        version=version,
        episode_id=uuid.uuid4().hex,
        features=features,
        drift_share=sum(d.drift_share for d in members) / len(members),
        window_start=min(d.window_start for d in members),
        window_end=max(d.window_end for d in members),
        live_rows=sum(d.live_rows for d in members),
        reference_rows=sum(d.reference_rows for d in members),
        decided_at=now,
        reasons=tuple(reasons),
        partitions=tuple((d.model, d.version) for d in members),
    )


def _strongest(
    members: Sequence[DriftDecision],
) -> tuple[tuple[FeatureDrift, ...], dict[str, int]]:
    """Per tested column (first-seen order): the drifted result with the smallest p-value (else
    the smallest p-value), and in how many members it drifted."""
    best: dict[str, FeatureDrift] = {}
    counts: collections.Counter[str] = collections.Counter()
    for decision in members:
        for f in decision.features:
            counts[f.feature] += f.drifted
            held = best.get(f.feature)
            if held is None or (f.drifted, -f.p_value) > (held.drifted, -held.p_value):
                best[f.feature] = f
    return tuple(best.values()), dict(counts)
