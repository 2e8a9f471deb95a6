"""Newest-frame slots and the dispatch rule: which waiting frames start the next job. Pure: no ZeroMQ,
no clock of its own.

Each source has one slot holding its newest frame; a newer frame replaces the waiting one (the caller
drops the old one as ``stale``), so nothing queues without bound and the frame that goes to inference
is always the freshest. :meth:`Slots.take` forms the next job:

1. **expired**: frames older than ``max_age_ns`` are handed back to be dropped;
2. **late**: a frame older than its own ``timeout_ns`` (a Frigate request its sender gave up on);
   and with an SLA, a frame's deadline is its arrival + the SLA; a frame that cannot finish by
   then even if it started now (now + the job-time estimate > deadline) is handed back to be dropped
   as ``late``: started, it would only publish a result over the SLA and hold the request that a
   frame which can still make it needs. (Under overload, earliest-deadline-first without this rule
   serves exactly the frames most likely to be late.) Only frames late *because they waited* are
   dropped: when the estimate alone exceeds the SLA (a CPU hog, an SLA this level cannot meet), no
   frame could do better, so frames are served, counted over the SLA, and the controller, seeing the
   SLA broken, steps down. Dropping them all would answer a lone REQ camera with nothing but drops.
   The estimate depends on the jobs already in flight (a job behind another on one stream waits for
   it): a frame that would finish late if started now behind them, but in time once they are done,
   waits for a free slot instead of being started (or dropped).
3. **order** among the feasible frames: higher ``priority`` first; then the source that has received
   the least service for its ``weight`` (start-time fair queuing: each served frame advances its
   source's virtual time by 1 / weight, and a source that was idle starts at the current virtual
   time, so it banks no credit); then the earliest deadline. Plain oldest-first starves cameras that
   send in a steady phase: the camera whose frame arrives first in every round always holds the
   oldest frame. With this rule equal cameras take turns, whatever their phase.
4. **batch forming**: a job's frames share one size and pixel format (one graph, one input tensor):
   the first frame in order picks them, the others wait for a job of their own. A partial batch
   waits for more sources while its oldest frame has waited less than ``batch_wait_ns`` and every
   frame in it could still make its deadline after waiting.

Owner: the I/O thread. Times are ``time.monotonic_ns()`` values passed in by the caller, so every
rule here is unit-tested without sleeping.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgeagent.config import DEFAULT_SOURCE, SourceConfig
from edgeagent.tuner import nearest_rank
from edgeagent.wire import Frame

DEADLINE_SLACK_NS = 2_000_000


@dataclass(slots=True)
class Take:
    """What :meth:`Slots.take` decided: ``frames`` to start as one job (empty when nothing should start
    now), and ``expired`` and ``late`` frames for the caller to drop with those reasons."""

    frames: list[Frame] = field(default_factory=list)
    expired: list[Frame] = field(default_factory=list)
    late: list[Frame] = field(default_factory=list)


class JobTimer:
    """How long a job will take at the running level: from ``submit`` until its results can be
    published, including any wait behind other jobs inside OpenVINO.

    Kept per ``ahead``, the number of jobs already in flight when it was submitted: with one stream and
    two infer requests a job started behind another waits for it first, so one estimate for both kinds
    would be too short for one and too long for the other (a probe of such a level published late
    results). The estimate is the ``percent`` (95th) percentile of the last ``size`` jobs with that
    ``ahead``; for an ``ahead`` with fewer than ``min_samples`` jobs it is derived from the largest
    ``ahead`` below with enough (each job more ahead adds one job per ``streams``), else the ``prior``
    (the level's own from when it last ran, or the previous level's, at a level switch), else 0
    (unknown: every frame counts as feasible). Everything is forgotten once no job has completed for
    ``stale_ns``: an estimate from a slow spell (a CPU hog) would otherwise mark every frame late for ever,
    and no job would run to correct it. Under an SLA the device cannot meet at all, this lets
    ``min_samples`` frames through per ``stale_ns`` to measure again."""

    def __init__(
        self, size: int = 64, min_samples: int = 3, stale_ns: int = 1_000_000_000, percent: float = 95.0
    ) -> None:
        self.size = size
        self.min_samples = min_samples
        self.stale_ns = stale_ns
        self.percent = percent
        self.streams = 1  # of the running level: jobs beyond the streams wait for one to finish
        self.prior: dict[int, int] = {}
        # Per ahead: the last ``size`` durations in arrival order, and the same kept sorted (one insort and
        # one delete per job instead of a sort: the percentile is an index).
        self._rings: dict[int, collections.deque[int]] = {}
        self._sorted: dict[int, list[int]] = {}
        # The nearest rank (1-based) of ``percent`` among n values, for every n up to size.
        self._rank = [0] + [max(1, int(nearest_rank(range(1, n + 1), percent))) for n in range(1, size + 1)]
        self._estimates: dict[int, int] = {}  # computed once per job, not on every dispatch and poll
        self._ran: collections.deque[int] = collections.deque(maxlen=size)  # OpenVINO's own run times
        self._earliest_ns = 0
        self._last_ns = 0

    def observe(self, duration_ns: int, now_ns: int, ahead: int = 0, ran_ns: int = 0) -> None:
        """A job submitted with ``ahead`` in flight was seen done ``duration_ns`` after its submit;
        ``ran_ns``: how long OpenVINO says it ran (the request's own latency; 0: unknown)."""
        if ran_ns > 0:
            self._ran.append(ran_ns)
            self._earliest_ns = min(self._ran)
        ring = self._rings.get(ahead)
        if ring is None:
            ring = self._rings[ahead] = collections.deque()
            self._sorted[ahead] = []
        ordered = self._sorted[ahead]
        if len(ring) >= self.size:
            del ordered[bisect.bisect_left(ordered, ring.popleft())]
        ring.append(duration_ns)
        bisect.insort(ordered, duration_ns)
        self._last_ns = now_ns
        n = len(ordered)
        if n >= self.min_samples:
            self._estimates[ahead] = ordered[self._rank[n] - 1]

    def estimate_ns(self, now_ns: int, ahead: int = 0) -> int:
        if self._last_ns and now_ns - self._last_ns > self.stale_ns:
            self.reset()
        est = self._estimates.get(ahead)
        if est is not None:
            return est
        known = [a for a in self._estimates if a < ahead]
        if known:
            # Each job ahead beyond the measured ones adds up to a whole job per stream.
            below = max(known)
            return int(self._estimates[below] * (1 + (ahead - below) / self.streams))
        return self.prior.get(ahead, self.prior.get(0, 0))

    def earliest_ns(self) -> int:
        """The shortest run time OpenVINO reported for the last jobs (0: none seen): the earliest a job of
        the running level can be expected to finish. From the engine's clock, not from when the loop
        saw a job done: a loop that waits until the earliest end before looking would otherwise learn
        its own lateness and never look earlier again."""
        return self._earliest_ns

    def estimates(self) -> dict[int, int]:
        """``ahead`` → the measured estimate (ns), for a level switch's prior."""
        return dict(self._estimates)

    def reset(self, prior: dict[int, int] | None = None) -> None:
        """Forget every job; ``prior`` (another level's :meth:`estimates`) stands in until jobs are seen."""
        self.prior = dict(prior or {})
        self._rings = {}
        self._sorted = {}
        self._estimates = {}
        self._ran.clear()
        self._earliest_ns = 0
        self._last_ns = 0


class Slots:
    def __init__(self, sources: Mapping[str, SourceConfig] | None = None) -> None:
        """``sources``: per-source weight and priority (others get the defaults)."""
        self.sources: Mapping[str, SourceConfig] = sources or {}
        # slot → its waiting frame; read (never written) by the I/O loop's hot path: "any frame waiting?"
        self.waiting: dict[str, Frame] = {}
        # source → virtual time (service received / weight); as many as sources (ingest.max_sources)
        self._vtime: dict[str, float] = {}
        self._vclock = 0.0  # the virtual time of the last frame started

    def __len__(self) -> int:
        return len(self.waiting)

    def put(self, frame: Frame) -> Frame | None:
        """Make ``frame`` its source's waiting frame; returns the frame it replaced (now stale), if any."""
        slot = frame.slot_key or frame.source  # frame.slot, without a property call per frame
        old = self.waiting.get(slot)
        self.waiting[slot] = frame
        if old is None and self._vtime.get(slot, -1.0) < self._vclock:
            self._vtime[slot] = self._vclock  # was idle: no banked credit
        return old

    def _order(self, frame: Frame) -> tuple[int, float, int]:
        cfg = self.sources.get(frame.source, DEFAULT_SOURCE)
        return (-cfg.priority, self._vtime.get(frame.slot, self._vclock), frame.rx_ns)

    def take(
        self,
        now_ns: int,
        batch: int,
        batch_wait_ns: int,
        max_age_ns: int = 0,
        sla_ns: int = 0,
        job_ns: int = 0,
        free_job_ns: int | None = None,
    ) -> Take:
        """The next job of at most ``batch`` frames (see the module docstring for the rules).

        ``max_age_ns``: 0 for no age limit. ``sla_ns``: 0 for no deadlines. ``job_ns``: the job-time
        estimate for a job started now, behind the jobs already in flight (0: unknown, every frame counts
        as feasible); ``free_job_ns``: for a job started with none ahead of it (default ``job_ns``). A
        frame that would miss its deadline behind the running jobs but not once they are done waits for
        them instead of starting now: started, it would queue inside OpenVINO and publish late.
        """
        out = Take()
        free_ns = job_ns if free_job_ns is None else free_job_ns
        frames = self.waiting
        deadlines = sla_ns and 0 < free_ns <= sla_ns
        for slot, frame in list(frames.items()):
            age_ns = now_ns - frame.rx_ns
            if max_age_ns and age_ns > max_age_ns:
                out.expired.append(frames.pop(slot))
            elif (deadlines and age_ns + free_ns > sla_ns) or (frame.timeout_ns and age_ns > frame.timeout_ns):
                out.late.append(frames.pop(slot))
        if not frames:
            return out
        if batch > 1 and self.wait_ns(now_ns, batch, batch_wait_ns, sla_ns, job_ns):
            return out  # a partial batch, waiting (bounded) for more sources
        if deadlines and job_ns > free_ns:
            ready = [f for f in frames.values() if now_ns + job_ns <= f.rx_ns + sla_ns]  # others wait for a free slot
            if not ready:
                return out
        else:
            ready = list(frames.values())
        if len(ready) > 1:
            ordered = sorted(ready, key=self._order)
            key = ordered[0].key
            ready = [f for f in ordered if f.key == key][:batch]
        for frame in ready:
            slot = frame.slot_key or frame.source
            del frames[slot]
            cfg = self.sources.get(frame.source, DEFAULT_SOURCE)
            start = self._vtime.get(slot, self._vclock)
            if start > self._vclock:
                self._vclock = start
            self._vtime[slot] = start + 1.0 / cfg.weight
            out.frames.append(frame)
        return out

    def wait_ns(self, now_ns: int, batch: int, batch_wait_ns: int, sla_ns: int = 0, job_ns: int = 0) -> int | None:
        """How long a partial batch that is waiting now may still wait for more sources (0: start it
        now), for :meth:`take` and the I/O thread's poll timeout; None when no partial batch waits.
        The wait ends when the oldest frame has waited ``batch_wait_ns``, or earlier when waiting longer
        would leave a frame unable to make its deadline (the job still takes ``job_ns`` after it)."""
        if batch <= 1 or not self.waiting or len(self.waiting) >= batch:
            return None
        until = min(f.rx_ns for f in self.waiting.values()) + batch_wait_ns
        if sla_ns:
            # Ends DEADLINE_SLACK_NS before the last moment the oldest frame could start: the poll that
            # ends the wait wakes up to a millisecond late, and a frame past that moment is dropped as late.
            until = min(until, min(f.rx_ns for f in self.waiting.values()) + sla_ns - job_ns - DEADLINE_SLACK_NS)
        return max(0, until - now_ns)

    def prune(self) -> None:
        """Forget the fair-queuing state of slots with no frame waiting and no credit spent ahead of the
        virtual clock (they would restart at the clock anyway): keeps it bounded as sources and Frigate
        sockets come and go."""
        self._vtime = {k: v for k, v in self._vtime.items() if v > self._vclock or k in self.waiting}

    def remove_if(self, pred: Callable[[Frame], bool]) -> list[Frame]:
        """Remove and return the waiting frames for which ``pred`` holds (``lambda f: True`` at shutdown)."""
        gone = [f for f in self.waiting.values() if pred(f)]
        for f in gone:
            del self.waiting[f.slot]
        return gone
