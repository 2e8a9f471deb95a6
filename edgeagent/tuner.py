"""The adaptive SLA controller's policy core: the execution ladder, window statistics and decisions.

Pure functions over frozen dataclasses: no OpenVINO, no threads, no I/O, no clock of its own (a window
carries its end time, the state counts windows), so every rule is unit-tested over synthetic latency
traces without sleeping. The agent calls :func:`summarize_window` and :func:`decide` once per control
window and carries out a level change (compile off the hot path, drain, swap) when the decision says so.
:func:`decide` assumes the window was measured at ``state.level``: windows that straddle a level swap
should not be fed to it.

Units are in the names: ``_ms`` milliseconds, ``_s`` seconds, ``_fps`` frames per second; "windows"
counts control windows.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from edgeagent.errors import InvalidSetting

Action = Literal["up", "down", "hold"]

# Stream rungs between 1 stream and the top stream count, at most. Each rung costs a compile and at least
# ``up_windows`` windows to climb, so a 64-core box should not need 32 rungs to reach its top.
MAX_STREAM_RUNGS = 6


@dataclass(frozen=True)
class ExecLevel:
    """One execution configuration. ``streams``, ``batch`` and ``accuracy`` are fixed at compile time;
    ``requests`` (infer requests in flight) is not. ``accuracy``: f32 with OpenVINO's ACCURACY
    execution mode instead of the device's fast precision (bf16/f16 where it has one)."""

    streams: int
    requests: int
    batch: int
    accuracy: bool = False

    def describe(self) -> str:
        return f"streams={self.streams} requests={self.requests} batch={self.batch}" + (
            " precision=accuracy" if self.accuracy else ""
        )


def _stream_rungs(top: int) -> list[int]:
    """Geometric stream counts from 2 up to exactly ``top``: powers of two while that needs at most
    :data:`MAX_STREAM_RUNGS` rungs, evenly spaced on a log scale beyond (128 → 2, 5, 11, 25, 57, 128)."""
    if top < 2:
        return []
    n = min(math.ceil(math.log2(top)), MAX_STREAM_RUNGS)
    return sorted({max(2, round(top ** (i / n))) for i in range(1, n + 1)})


def _requests_for(streams: int, optimal_requests: int) -> int:
    """Infer requests for ``streams`` streams: one spare beyond the streams, or two per stream when the
    device asks for more than one in flight per stream (``optimal_requests`` > 1, e.g. a GPU).

    Why one spare, not one per stream, on a CPU: the agent's single I/O thread hands frames over one at
    a time, so one spare request covers the stream that has just finished. A spare per stream parks a
    second frame behind every running inference: at saturation, where this controller works, each frame
    waits up to a whole inference more (up to 2x latency), and a frame inside the plugin's queue can no
    longer be dropped as stale. Never more than 2 per stream: beyond that requests only queue.
    """
    return min(2 * streams, max(streams + 1, streams * optimal_requests))


def _batch_sizes(max_batch: int) -> list[int]:
    """2, 4, 8 ... up to ``max_batch``, and ``max_batch`` itself when it is not a power of two."""
    sizes = []
    batch = 2
    while batch <= max_batch:
        sizes.append(batch)
        batch *= 2
    if max_batch > 1 and max_batch not in sizes:
        sizes.append(max_batch)
    return sizes


def derive_ladder(
    n_cpus: int,
    max_streams: int,
    throughput_streams: int,
    optimal_requests: int,
    max_batch: int = 4,
    allow_batch: bool = True,
    accuracy_rung: bool = False,
) -> list[ExecLevel]:
    """The ordered levels, from the LATENCY configuration (level 0) to the most throughput.

    * level 0: 1 stream, 1 request, batch 1 — what the LATENCY hint itself runs;
    * level 1: 1 stream, 2 requests — pre/post-processing and I/O of the next frame overlap inference;
    * streams 2 ... top, geometric (1, 2, 4, 8 ... and exactly ``top`` last; at most
      :data:`MAX_STREAM_RUNGS` rungs), where top = min(``throughput_streams``, ``max_streams``,
      ``n_cpus``), each with streams + 1 requests (see :func:`_requests_for`);
    * when ``allow_batch``: batch 2, 4 ... ≤ ``max_batch`` at the top stream count;
    * when ``accuracy_rung``: below all of these, 1 stream, 1 request, batch 1 in accuracy mode (f32), so
      the controller moves to the device's fast precision only when the load asks for it.

    ``n_cpus``: CPUs in the inference CPU set; ``max_streams``: the device's RANGE_FOR_STREAMS upper
    bound; ``throughput_streams``: the THROUGHPUT hint's stream count; ``optimal_requests``: the device's
    OPTIMAL_NUMBER_OF_INFER_REQUESTS for one stream (1 on a CPU). The result has no duplicates and is
    strictly increasing in (streams x batch, requests). Raises ValueError when an input is below 1.
    """
    inputs = {
        "n_cpus": n_cpus,
        "max_streams": max_streams,
        "throughput_streams": throughput_streams,
        "optimal_requests": optimal_requests,
        "max_batch": max_batch,
    }
    for name, value in inputs.items():
        if value < 1:
            raise ValueError(f"derive_ladder: {name}={value}, expected an integer >= 1")
    top = min(throughput_streams, max_streams, n_cpus)
    ladder = [ExecLevel(1, 1, 1), ExecLevel(1, _requests_for(1, optimal_requests), 1)]
    ladder += [ExecLevel(s, _requests_for(s, optimal_requests), 1) for s in _stream_rungs(top)]
    if allow_batch:
        ladder += [ExecLevel(top, _requests_for(top, optimal_requests), b) for b in _batch_sizes(max_batch)]
    if accuracy_rung:
        ladder.insert(0, ExecLevel(1, 1, 1, accuracy=True))
    return ladder


@dataclass(frozen=True)
class SLAPolicy:
    """The controller's knobs, and the one place each is defined and checked: the config's ``[sla]``
    section is this class plus ``adaptive`` (:class:`edgeagent.config.SLAConfig`). Raises
    :class:`~edgeagent.errors.InvalidSetting` naming the field, its value and what is expected.

    ``window_s`` is the agent's window length (the agent extends a window with fewer than ``min_frames``
    frames); :func:`decide` itself only counts windows.
    """

    p99_ms: float  # the SLA: p99 end-to-end latency inside the agent
    window_s: float = 1.0
    min_frames: int = 50  # fewer frames: not enough evidence to step up (a break still steps down)
    headroom: float = 0.8  # step up only while p99 <= headroom x SLA
    up_windows: int = 2  # consecutive good windows with demand before stepping up
    busy_demand: float = 0.8  # demand: drops, or all requests busy for at least this fraction
    idle_windows: int = 3  # consecutive windows without demand before stepping down
    backoff_base_windows: int = 2  # back-off of a level that broke the SLA: base, 2 base, 4 base ...
    backoff_max_windows: int = 64  # ... capped; also how long a level must hold to be forgiven
    # How long a remembered break (or saturation) still says "not at this load". Finite, because the
    # box changes (thermal limits, neighbours, scene content): a level is re-probed at the same load
    # at most once per memory_windows, i.e. under 1% of windows break at a constant load by default.
    memory_windows: int = 120
    load_tolerance: float = 0.1  # offered loads within this fraction count as the same load (jitter)
    # A level that costs latency without buying goodput goes back down: at the same load, its p99 more
    # than latency_tolerance above the level below's and its goodput not min_gain above (more streams
    # than the CPUs can feed, a batch that only adds queueing, a load the level below already served).
    min_gain: float = 0.05
    latency_tolerance: float = 0.2
    # A failure remembered under CPU interference this much higher than now does not block a re-probe:
    # when a CPU hog stops, the controller climbs back instead of waiting out memory_windows.
    interference_tolerance: float = 0.15

    def __post_init__(self) -> None:
        checks = [
            (
                "p99_ms",
                math.isfinite(self.p99_ms) and 0 < self.p99_ms <= 60_000,
                "a number of milliseconds in (0, 60000]",
            ),
            ("window_s", math.isfinite(self.window_s) and 0.05 <= self.window_s <= 600, "seconds in [0.05, 600]"),
            ("min_frames", self.min_frames >= 1, "an integer >= 1"),
            ("headroom", 0 < self.headroom <= 1, "a fraction in (0, 1]"),
            ("up_windows", self.up_windows >= 1, "an integer >= 1"),
            ("busy_demand", 0 < self.busy_demand <= 1, "a fraction in (0, 1]"),
            ("idle_windows", self.idle_windows >= 1, "an integer >= 1"),
            ("backoff_base_windows", self.backoff_base_windows >= 1, "an integer >= 1"),
            (
                "backoff_max_windows",
                self.backoff_max_windows >= self.backoff_base_windows,
                f"an integer >= backoff_base_windows ({self.backoff_base_windows})",
            ),
            ("memory_windows", self.memory_windows >= 0, "an integer >= 0 (0: no memory)"),
            ("load_tolerance", 0 <= self.load_tolerance < 1, "a fraction in [0, 1)"),
            ("min_gain", 0 <= self.min_gain < 1, "a fraction in [0, 1)"),
            ("latency_tolerance", 0 <= self.latency_tolerance <= 10, "a fraction in [0, 10]"),
            ("interference_tolerance", 0 < self.interference_tolerance <= 1, "a fraction in (0, 1]"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise InvalidSetting(name, getattr(self, name), expected, owner="SLAPolicy")


@dataclass(frozen=True)
class WindowStats:
    """One control window as the agent measured it; latencies are end to end inside the agent."""

    t_end_s: float  # monotonic clock at the window's end
    duration_s: float
    frames: int  # frames processed (results published)
    dropped: int  # frames dropped (stale or expired) without a result
    p50_ms: float  # latency percentiles: NaN when frames == 0
    p95_ms: float
    p99_ms: float
    max_ms: float
    busy_fraction: float  # share of the window with every infer request busy, 0..1
    in_sla: int  # frames with latency <= the SLA's p99_ms
    interference: float = 0.0  # share of the CPUs used by other processes (or stolen), 0..1
    level: int = 0  # the execution level the whole window ran at (a swap starts a new window)
    epoch: int = 0  # the swap count when it was measured: a window from before a swap is stale

    @property
    def goodput_fps(self) -> float:
        """Frames within the SLA per second."""
        return self.in_sla / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def offered_fps(self) -> float:
        """The load: frames that reached the agent (processed or dropped) per second."""
        return (self.frames + self.dropped) / self.duration_s if self.duration_s > 0 else 0.0

    def met(self, p99_ms: float) -> bool:
        """Whether this window met an SLA of ``p99_ms`` (a window without frames has nothing to break)."""
        return self.frames == 0 or self.p99_ms <= p99_ms


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ascending ``sorted_values``: the smallest value with at least
    ``percent`` % of the values at or below it, so always an observed value. NaN when empty."""
    if not sorted_values:
        return math.nan
    # Rounded first so that float noise (e.g. 0.29 x 100 = 28.999...) cannot move the rank.
    rank = math.ceil(round(percent / 100 * len(sorted_values), 9))
    return float(sorted_values[min(max(rank, 1), len(sorted_values)) - 1])


def summarize_window(
    latencies_ms: Sequence[float],
    dropped: int,
    busy_fraction: float,
    t_end_s: float,
    duration_s: float,
    sla_p99_ms: float,
) -> WindowStats:
    """Summarize one window: nearest-rank percentiles (:func:`nearest_rank`), frames within
    ``sla_p99_ms``; ``busy_fraction`` is clamped to 0..1 (clock rounding). Raises ValueError when
    ``duration_s`` <= 0 or ``dropped`` < 0."""
    if not duration_s > 0 or dropped < 0:
        raise ValueError(f"summarize_window: duration_s={duration_s} dropped={dropped}, expected > 0 and >= 0")
    s = sorted(latencies_ms)
    return WindowStats(
        t_end_s=t_end_s,
        duration_s=duration_s,
        frames=len(s),
        dropped=dropped,
        p50_ms=nearest_rank(s, 50),
        p95_ms=nearest_rank(s, 95),
        p99_ms=nearest_rank(s, 99),
        max_ms=float(s[-1]) if s else math.nan,
        busy_fraction=min(1.0, max(0.0, busy_fraction)),
        in_sla=bisect.bisect_right(s, sla_p99_ms),  # s is sorted
    )


@dataclass(frozen=True)
class LevelMemory:
    """What a level achieved at what load, the last window it ran."""

    offered_fps: float  # the load (processed + dropped per second)
    p99_ms: float
    met: bool  # the SLA held
    demand: bool = False  # the level was saturated: drops, or busy >= busy_demand
    window_index: int = 0  # when it was observed, for forgetting
    interference: float = 0.0  # other processes' share of the CPUs then (a hog, throttling, steal)
    goodput_fps: float = 0.0  # in-SLA results per second


@dataclass(frozen=True)
class TunerState:
    """The controller's whole state. Never mutated: :func:`decide` returns a new one, and the mappings
    are read-only copies (a caller's dict is copied on construction)."""

    level: int = 0
    window_index: int = 0  # windows decided so far
    good_streak: int = 0  # consecutive windows with demand, enough frames and p99 within headroom
    idle_streak: int = 0  # consecutive windows without demand
    met_streak: int = 0  # consecutive windows meeting the SLA at this level
    no_gain_streak: int = 0  # consecutive windows without min_gain more goodput than the level below had
    backoff_until: Mapping[int, int] = field(default_factory=dict)  # level -> last window it may not be probed
    backoff_count: Mapping[int, int] = field(default_factory=dict)  # level -> breaks not yet forgiven
    # level -> last window it counts as a rung that bought nothing (backed off for no gain, not a break);
    # one that only added requests or precision is passed by the climb and by a step down (_passable)
    no_gain_until: Mapping[int, int] = field(default_factory=dict)
    memory: Mapping[int, LevelMemory] = field(default_factory=dict)
    last_p99_ms: float = math.nan  # of the last window with frames

    def __post_init__(self) -> None:
        for name in ("backoff_until", "backoff_count", "no_gain_until", "memory"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


@dataclass(frozen=True)
class Decision:
    action: Action
    from_level: int
    to_level: int
    reason: str  # a short sentence naming the numbers


def backoffs(state: TunerState) -> dict[int, int]:
    """Level -> windows of back-off remaining (for the status command and metrics)."""
    return {
        lv: until - state.window_index
        for lv, until in sorted(state.backoff_until.items())
        if until > state.window_index
    }


def level_failed(state: TunerState, level: int, running_level: int, policy: SLAPolicy) -> TunerState:
    """The agent could not bring ``level`` up (its compile failed) and still runs ``running_level``.

    The level goes into the longest back-off at once: a compile failure (memory, an unsupported batch)
    does not depend on the load and would fail again on the next probe. Since :func:`decide` climbs one
    level at a time, the levels above it are out of reach for as long too.
    """
    if level < 0 or running_level < 0:
        raise ValueError(f"level_failed: level={level} running_level={running_level}, expected >= 0")
    until = {**state.backoff_until, level: state.window_index + policy.backoff_max_windows}
    counts = {**state.backoff_count, level: state.backoff_count.get(level, 0) + 1}
    return replace(
        state,
        level=running_level,
        good_streak=0,
        idle_streak=0,
        met_streak=0,
        backoff_until=until,
        backoff_count=counts,
    )


def _struggled_at(
    mem: LevelMemory | None,
    offered_fps: float,
    now: int,
    policy: SLAPolicy,
    *,
    failures_only: bool,
    interference: float = 0.0,
) -> bool:
    """Whether a level is remembered, recently enough, to have broken the SLA (or, unless
    ``failures_only``, to have been saturated) at a load no higher than ``offered_fps``: then it would
    do so again now. A load clearly below the remembered one is worth a try."""
    if mem is None or now - mem.window_index > policy.memory_windows:
        return False
    if mem.met and (failures_only or not mem.demand):
        return False
    if mem.interference > interference + policy.interference_tolerance:
        return False  # it failed while something else took the CPU; that has eased: worth a try
    return offered_fps >= (1 - policy.load_tolerance) * mem.offered_fps


def _back_off(state: TunerState, level: int, now: int, policy: SLAPolicy) -> tuple[TunerState, int]:
    """``level`` goes into back-off for base x 2^(breaks - 1) windows (capped); returns the windows."""
    count = state.backoff_count.get(level, 0) + 1
    windows = min(policy.backoff_base_windows * 2 ** min(count - 1, 32), policy.backoff_max_windows)
    backed = replace(
        state,
        backoff_until={**state.backoff_until, level: now + windows},
        backoff_count={**state.backoff_count, level: count},
    )
    return backed, windows


def _passable(ladder: Sequence[ExecLevel], no_gain: Mapping[int, int], level: int) -> bool:
    """Whether ``level`` is a rung the controller passes: it bought nothing over the level below it
    (``no_gain``) and differs from it only in infer requests or precision, not in streams or batch. A
    second request that only queues on a 2-CPU box says nothing about two streams; two streams or batch 2
    that bought nothing say that more of the same will not either."""
    if level not in no_gain or not 0 < level < len(ladder):
        return False
    here, below = ladder[level], ladder[level - 1]
    return (here.streams, here.batch) == (below.streams, below.batch)


def _rung_below(ladder: Sequence[ExecLevel], no_gain: Mapping[int, int], level: int) -> int:
    """The level a step down from ``level`` goes to, and the one it must beat: the next one down that is
    not a passed rung (going there would only cost latency; level 0 counts)."""
    below = level - 1
    while below > 0 and _passable(ladder, no_gain, below):
        below -= 1
    return max(below, 0)


def _rung_above(ladder: Sequence[ExecLevel], no_gain: Mapping[int, int], level: int) -> int:
    """The level a step up from ``level`` goes to: the next one up, past rungs that bought nothing and
    only added requests or precision (:func:`_passable`): the streams and batches beyond them may still
    pay, and such a rung would otherwise block the rest of the ladder."""
    above = level + 1
    while above < len(ladder) - 1 and _passable(ladder, no_gain, above):
        above += 1
    return above


def decide(
    state: TunerState, window: WindowStats, ladder: Sequence[ExecLevel], policy: SLAPolicy
) -> tuple[TunerState, Decision]:
    """One control step for one window measured at ``state.level``; returns the new state and why.

    * SLA broken (p99 > ``p99_ms``): one level down at once, and the level that broke goes into
      back-off for base x 2^(breaks - 1) windows (capped). One level, not straight to a level memory
      says met this load: the level just below is the one with the most throughput that is not known
      to break; memory of lower levels is older and from other loads. At level 0: hold. A severe break
      (p99 >= 2 x SLA, or CPU interference up by ``interference_tolerance`` since the level's last
      window: a CPU hog started) goes straight to level 0, the configuration that needs the least CPU.
    * Up one level when the last ``up_windows`` windows each had demand, ``min_frames`` frames and p99
      <= headroom x SLA, unless the next level is in back-off or is remembered breaking the SLA at this
      load or a lower one (within ``load_tolerance``; remembered for ``memory_windows``).
    * Down one level after ``idle_windows`` windows without demand (spare capacity: lower latency),
      unless the level below is remembered saturated or broken at this load: going there would only
      bring the demand back and climb again — the idle/up oscillation.
    * No gain: at the same load, p99 more than ``latency_tolerance`` above the level below's and
      goodput not ``min_gain`` above it, for ``up_windows`` windows: down, backed off like a break. Such
      a rung, when it only added infer requests or precision, does not block the ladder: the climb
      passes it (a second infer request that only queues on a 2-CPU box, with two streams above it that
      pay 40 %), and while the controller is above it, it is neither where a step down goes nor the
      level a higher one is judged against. A stream or batch rung without gain blocks the climb as
      before: more of the same would not pay either.
    * Otherwise hold. A level that meets the SLA for ``backoff_max_windows`` windows in a row has its
      breaks forgiven, so one break after a long good run costs the base back-off again.

    "One level" up or down means one rung: rungs that bought nothing are passed.
    """
    if not ladder:
        raise ValueError("decide: the ladder is empty")
    now = state.window_index + 1
    level = min(max(state.level, 0), len(ladder) - 1)
    sla_ms = policy.p99_ms
    offered_fps = window.offered_fps
    met = window.met(sla_ms)
    demand = window.dropped > 0 or window.busy_fraction >= policy.busy_demand
    memory = {
        **state.memory,
        level: LevelMemory(offered_fps, window.p99_ms, met, demand, now, window.interference, window.goodput_fps),
    }
    # Back-offs over after this window are pruned so that the state stays as small as the ladder.
    base = replace(
        state,
        level=level,
        window_index=now,
        memory=memory,
        backoff_until={lv: u for lv, u in state.backoff_until.items() if u > now},
        # A rung passed on the way up stays one while the controller is above it (else the level above
        # would be judged against it, not against the level it has to beat).
        no_gain_until={lv: u for lv, u in state.no_gain_until.items() if u >= now or lv < level},
        last_p99_ms=window.p99_ms if window.frames else state.last_p99_ms,
    )
    down_to = _rung_below(ladder, base.no_gain_until, level)

    def out(new: TunerState, action: Action, to: int, reason: str) -> tuple[TunerState, Decision]:
        if to != level:  # a new level proves itself from scratch
            new = replace(new, good_streak=0, idle_streak=0, met_streak=0, no_gain_streak=0)
        return replace(new, level=to), Decision(action, level, to, reason)

    p99 = f"p99 {window.p99_ms:.1f} ms"
    if not met:
        broken = replace(base, good_streak=0, idle_streak=0, met_streak=0)
        if level == 0:
            return out(broken, "hold", 0, f"{p99} > SLA {sla_ms:g} ms at level 0, the bottom: nothing lower")
        broken, windows = _back_off(broken, level, now, policy)
        broken = replace(broken, no_gain_until={k: v for k, v in broken.no_gain_until.items() if k != level})
        # A severe break (p99 at twice the SLA or more, or another process suddenly taking the CPUs)
        # goes straight to level 0: stepping down one level per window under a CPU hog broke the SLA in
        # every window on the way down. The climb back is two windows a rung.
        before = state.memory.get(level) or state.memory.get(down_to)
        hog = before is not None and window.interference >= before.interference + policy.interference_tolerance
        severe = f" (CPU interference {window.interference:.0%})" if hog else ""
        if not hog and window.p99_ms >= 2 * sla_ms:
            severe = " (p99 >= 2 x SLA)"
        to = 0 if severe else down_to
        return out(
            broken,
            "down",
            to,
            f"{p99} > SLA {sla_ms:g} ms{severe}: down to level {to}, level {level} backed off for {windows} windows",
        )

    enough = window.frames >= policy.min_frames
    good = enough and window.p99_ms <= policy.headroom * sla_ms
    good_streak = state.good_streak + 1 if good and demand else 0
    idle_streak = 0 if demand else state.idle_streak + 1
    met_streak = state.met_streak + 1
    counts = dict(state.backoff_count)
    if met_streak >= policy.backoff_max_windows:
        counts.pop(level, None)
    below = state.memory.get(down_to) if level > 0 else None
    no_gain = (
        below is not None
        and enough
        and below.met
        and now - below.window_index <= policy.memory_windows
        and offered_fps >= (1 - policy.load_tolerance) * below.offered_fps
        and window.goodput_fps < (1 + policy.min_gain) * below.goodput_fps
        and window.p99_ms > (1 + policy.latency_tolerance) * below.p99_ms
    )
    no_gain_streak = state.no_gain_streak + 1 if no_gain else 0
    base = replace(
        base,
        good_streak=good_streak,
        idle_streak=idle_streak,
        met_streak=met_streak,
        no_gain_streak=no_gain_streak,
        backoff_count=counts,
    )
    load = f"{offered_fps:.0f} fps offered"

    if no_gain_streak >= policy.up_windows and below is not None:
        backed, windows = _back_off(base, level, now, policy)
        backed = replace(backed, no_gain_until={**backed.no_gain_until, level: now + windows})
        return out(
            backed,
            "down",
            down_to,
            f"no gain: goodput {window.goodput_fps:.0f} fps at {p99}, level {down_to} had "
            f"{below.goodput_fps:.0f} fps at p99 {below.p99_ms:.1f} ms ({load}) for {no_gain_streak} windows: "
            f"down to level {down_to}, level {level} backed off for {windows} windows",
        )

    if good_streak >= policy.up_windows:
        if level + 1 >= len(ladder):
            return out(base, "hold", level, f"demand, {p99}, but level {level} is the top level")
        nxt = _rung_above(ladder, base.no_gain_until, level)
        skipped = "" if nxt == level + 1 else f" (past level {', '.join(map(str, range(level + 1, nxt)))}: no gain)"
        if state.backoff_until.get(nxt, 0) >= now:  # blocked through window backoff_until[nxt]
            until = state.backoff_until[nxt]
            return out(
                base, "hold", level, f"demand, {p99}, but level {nxt} is backed off until window {until} (now {now})"
            )
        mem = state.memory.get(nxt)
        if mem is not None and _struggled_at(
            mem, offered_fps, now, policy, failures_only=True, interference=window.interference
        ):
            return out(
                base,
                "hold",
                level,
                f"level {nxt} broke the SLA (p99 {mem.p99_ms:.1f} ms) at {mem.offered_fps:.0f} fps "
                f"{now - mem.window_index} windows ago; {load} now",
            )
        return out(
            base,
            "up",
            nxt,
            f"demand (dropped {window.dropped}, busy {window.busy_fraction:.0%}) and {p99} <= "
            f"{policy.headroom * sla_ms:g} ms for {good_streak} windows: up to level {nxt}{skipped}",
        )

    if idle_streak >= policy.idle_windows and level > 0:
        if below is not None and _struggled_at(
            below, offered_fps, now, policy, failures_only=False, interference=window.interference
        ):
            return out(
                base,
                "hold",
                level,
                f"no demand for {idle_streak} windows, but level {down_to} was saturated at "
                f"{below.offered_fps:.0f} fps {now - below.window_index} windows ago; {load} now",
            )
        return out(
            base,
            "down",
            down_to,
            f"no demand for {idle_streak} windows ({load}, busy {window.busy_fraction:.0%}): "
            f"down to level {down_to} for lower latency",
        )

    if demand and not enough:
        why = f"only {window.frames} frames (< {policy.min_frames}): not enough evidence to step up"
    elif demand and not good:
        why = f"{p99} meets SLA {sla_ms:g} ms but not headroom {policy.headroom * sla_ms:g} ms"
    elif demand:
        why = f"{p99} within headroom with demand for {good_streak} of {policy.up_windows} windows"
    else:
        why = f"{p99}, no demand for {idle_streak} of {policy.idle_windows} windows"
    return out(base, "hold", level, why)
