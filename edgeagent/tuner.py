"""The adaptive SLA controller's policy core: the ladder, window statistics and decisions.

Pure functions over frozen dataclasses. No OpenVINO, no threads, no clock of its own (the window
carries its end time), so every rule is unit-tested over synthetic latency traces without sleeping.
The agent calls :func:`summarize_window` and :func:`decide` once per control window on its I/O thread
and carries out a level change (compile off the hot path, drain, swap) when the decision says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ExecLevel:
    """One execution configuration. Streams and batch are fixed at compile time; requests are not."""

    streams: int
    requests: int
    batch: int

    def describe(self) -> str:
        return f"streams={self.streams} requests={self.requests} batch={self.batch}"


def derive_ladder(n_cpus: int, max_streams: int, throughput_streams: int, optimal_requests: int,
                  max_batch: int = 4, allow_batch: bool = True) -> list[ExecLevel]:  # fmt: skip
    """The ordered levels, from the LATENCY configuration up to the THROUGHPUT hint's and beyond.

    * level 0: 1 stream, 1 request, batch 1 — the LATENCY hint's own choice;
    * 1 stream, 2 requests: the next frame is ready the moment a job ends (hides the hand-off);
    * streams 2, 4, 8 ... up to the THROUGHPUT hint's stream count (capped by the device's
      ``RANGE_FOR_STREAMS`` and the CPU set), with one spare request (streams + 1): more requests than
      that only queue (measured: 4 requests on 1 stream = same FPS at 4x the latency);
    * batch 2, 4 (≤ ``max_batch``) at the top stream count, for several sources with waiting frames.

    Geometric stream steps keep the ladder short on big machines (64 CPUs: 9 levels).
    """
    if n_cpus < 1 or max_streams < 1 or throughput_streams < 1 or optimal_requests < 1 or max_batch < 1:
        raise ValueError(
            f"derive_ladder needs positive inputs, got n_cpus={n_cpus} max_streams={max_streams} "
            f"throughput_streams={throughput_streams} optimal_requests={optimal_requests} max_batch={max_batch}"
        )
    top = min(throughput_streams, max_streams, n_cpus)
    ladder = [ExecLevel(1, 1, 1), ExecLevel(1, 2, 1)]
    streams = 2
    while streams < top:
        ladder.append(ExecLevel(streams, streams + 1, 1))
        streams *= 2
    if top >= 2:
        ladder.append(ExecLevel(top, top + 1, 1))
    if allow_batch:
        batch = 2
        while batch <= max_batch:
            ladder.append(ExecLevel(top, top + 1 if top > 1 else 2, batch))
            batch *= 2
    return ladder


@dataclass(frozen=True)
class SLAPolicy:
    p99_ms: float
    window_s: float = 1.0
    min_frames: int = 50
    headroom: float = 0.8
    up_windows: int = 2
    busy_demand: float = 0.8
    idle_windows: int = 3
    backoff_base_windows: int = 2
    backoff_max_windows: int = 64
    memory_windows: int = 60  # a failure remembered at a load blocks re-probing at that load this long
    panic_factor: float = 2.0  # p99 above this x SLA: straight back to level 0

    def __post_init__(self) -> None:
        checks = [
            ("p99_ms", self.p99_ms > 0, "> 0"),
            ("window_s", self.window_s > 0, "> 0"),
            ("min_frames", self.min_frames >= 1, ">= 1"),
            ("headroom", 0 < self.headroom <= 1, "in (0, 1]"),
            ("up_windows", self.up_windows >= 1, ">= 1"),
            ("busy_demand", 0 < self.busy_demand <= 1, "in (0, 1]"),
            ("idle_windows", self.idle_windows >= 1, ">= 1"),
            ("backoff_base_windows", self.backoff_base_windows >= 1, ">= 1"),
            ("backoff_max_windows", self.backoff_max_windows >= self.backoff_base_windows, ">= backoff_base_windows"),
            ("memory_windows", self.memory_windows >= 0, ">= 0"),
            ("panic_factor", self.panic_factor > 1, "> 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"SLAPolicy.{name} = {getattr(self, name)!r}: expected {expected}")


@dataclass(frozen=True)
class WindowStats:
    """One control window, as the agent measured it (latency: socket in → result out)."""

    t_end_s: float
    duration_s: float
    frames: int
    dropped: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    busy_fraction: float
    in_sla: int

    @property
    def goodput_fps(self) -> float:
        """In-SLA frames per second."""
        return self.in_sla / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def offered_fps(self) -> float:
        """Frames that reached inference or were dropped waiting for it, per second."""
        return (self.frames + self.dropped) / self.duration_s if self.duration_s > 0 else 0.0

    def met(self, p99_ms: float) -> bool:
        return self.frames == 0 or self.p99_ms <= p99_ms


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_window(latencies_ms: Sequence[float], dropped: int, busy_fraction: float, t_end_s: float,
                     duration_s: float, sla_p99_ms: float) -> WindowStats:  # fmt: skip
    """Percentiles by the nearest-rank method (a value that was really observed)."""
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
        in_sla=sum(1 for v in s if v <= sla_p99_ms),
    )


@dataclass(frozen=True)
class LevelMemory:
    """What a level achieved at what load, and when (window index)."""

    offered_fps: float
    p99_ms: float
    met: bool
    window: int


@dataclass(frozen=True)
class TunerState:
    """Never mutated: :func:`decide` returns a new one (mappings are copied on write)."""

    level: int = 0
    window_index: int = 0
    good_streak: int = 0
    idle_streak: int = 0
    backoff_until: Mapping[int, int] = field(default_factory=dict)
    backoff_count: Mapping[int, int] = field(default_factory=dict)
    memory: Mapping[int, LevelMemory] = field(default_factory=dict)
    last_p99_ms: float = math.nan


@dataclass(frozen=True)
class Decision:
    action: str  # "up" | "down" | "hold"
    from_level: int
    to_level: int
    reason: str


def backoffs(state: TunerState) -> dict[int, int]:
    """Level → windows of back-off remaining (for the status command and metrics)."""
    return {lv: until - state.window_index for lv, until in state.backoff_until.items() if until > state.window_index}


def _blocked_by_memory(mem: LevelMemory | None, offered_fps: float, now: int, policy: SLAPolicy) -> bool:
    """A level that broke the SLA at a load at least this high, recently, is not worth probing."""
    return (mem is not None and not mem.met and offered_fps >= 0.9 * mem.offered_fps
            and now - mem.window < policy.memory_windows)  # fmt: skip


def decide(state: TunerState, window: WindowStats, ladder: Sequence[ExecLevel],
           policy: SLAPolicy) -> tuple[TunerState, Decision]:  # fmt: skip
    """One control step per window (see the module docstring for who calls it)."""
    now = state.window_index + 1
    level = min(state.level, len(ladder) - 1)
    met = window.met(policy.p99_ms)
    memory = dict(state.memory)
    if window.frames:
        memory[level] = LevelMemory(window.offered_fps, window.p99_ms, met, now)
    base = replace(state, window_index=now, memory=memory,
                   last_p99_ms=window.p99_ms if window.frames else state.last_p99_ms)  # fmt: skip
    sla = policy.p99_ms

    def out(new: TunerState, action: str, to: int, reason: str) -> tuple[TunerState, Decision]:
        return replace(new, level=to), Decision(action, level, to, reason)

    if not met:
        if level == 0:
            return out(replace(base, good_streak=0, idle_streak=0), "hold", 0,
                       f"p99 {window.p99_ms:.1f} ms > SLA {sla:g} ms at level 0: nothing lower to go to")  # fmt: skip
        count = state.backoff_count.get(level, 0) + 1
        windows = min(policy.backoff_base_windows * 2 ** (count - 1), policy.backoff_max_windows)
        until = {**state.backoff_until, level: now + windows}
        counts = {**state.backoff_count, level: count}
        to = 0 if window.p99_ms > policy.panic_factor * sla else level - 1
        return out(replace(base, good_streak=0, idle_streak=0, backoff_until=until, backoff_count=counts), "down", to,
                   f"p99 {window.p99_ms:.1f} ms > SLA {sla:g} ms: level {level} backed off for {windows} "
                   "windows")  # fmt: skip

    demand = window.dropped > 0 or window.busy_fraction >= policy.busy_demand
    good = window.frames >= policy.min_frames and window.p99_ms <= policy.headroom * sla
    good_streak = state.good_streak + 1 if good and demand else 0
    idle_streak = state.idle_streak + 1 if not demand else 0
    base = replace(base, good_streak=good_streak, idle_streak=idle_streak)

    if good_streak >= policy.up_windows and level + 1 < len(ladder):
        nxt = level + 1
        if state.backoff_until.get(nxt, 0) > now:
            left = state.backoff_until[nxt] - now
            return out(base, "hold", level, f"level {nxt} in back-off for {left} more windows")
        if _blocked_by_memory(memory.get(nxt), window.offered_fps, now, policy):
            mem = memory[nxt]
            return out(base, "hold", level, f"level {nxt} broke the SLA (p99 {mem.p99_ms:.1f} ms) at "
                       f"{mem.offered_fps:.0f} fps; offered now {window.offered_fps:.0f} fps")  # fmt: skip
        # A level that succeeds for a while earns a fresh back-off schedule.
        counts = {k: v for k, v in state.backoff_count.items() if k != nxt or state.backoff_until.get(k, 0) > now - 32}
        return out(replace(base, good_streak=0, backoff_count=counts), "up", nxt,
                   f"demand (dropped {window.dropped}, busy {window.busy_fraction:.0%}) and p99 "
                   f"{window.p99_ms:.1f} ms <= {policy.headroom:g} x SLA for {good_streak} windows")  # fmt: skip
    if idle_streak >= policy.idle_windows and level > 0:
        return out(replace(base, idle_streak=0), "down", level - 1,
                   f"no demand for {idle_streak} windows: spare capacity, lower latency one level down")  # fmt: skip
    return out(base, "hold", level, "steady")
