"""The trend analyzer: is a (time, bytes) series leaking, and how fast? Pure functions, no I/O, no asyncio.

It knows nothing of snapshots or of the profiler, so it can judge any series: RSS, traced heap bytes, a
cache size, a queue length. :class:`TrendAnalyzer` judges one series at a time; :class:`LeakTracker` feeds
it samples as they come (bounded memory, a judgement every few seconds, a leak that stays called until the
growth really stops).

What a service's memory does that is *not* a leak, and how each is told apart from one:

* **Noise and wandering** (allocator jitter, autocorrelated over minutes, GC ripples, 1% spikes, pages).
  The series is cut into at most ``max_bins`` bins of equal sample count, each summarised by its median
  (a spike never reaches the slope; gaps and jittered intervals cost nothing). The slope's error comes from
  the bins' own residuals and their autocorrelation (lag 1 and 2, bias-corrected), so wandering that keeps
  one direction for minutes widens the interval instead of passing for growth.
* **Steps** (a cache filled at once, a pool grew): a jump between neighbouring bins far beyond the bins'
  usual differences. The series is split there and only the growth *within* the pieces counts: a level
  that moved once is not a rate.
* **Cache cycles** (a sawtooth: fill, flush, refill): a sharp drop. Memory that is given back is not
  leaking; with drops in the window, a leak is judged on the low points after each drop (the troughs) and
  needs troughs that rise significantly, at the threshold's rate.
* **Warm-ups** (fast growth that slows: caches filling, imports, JIT-like warming): the growth of the recent
  part (the last half, quarter and eighth of the window) is compared with the whole window's; a recent
  slope significantly below it means the growth is slowing, "warming up", not a leak. A slope that
  *increases* is never a reason to downgrade.

A leak is growth that is significant (its one-sided lower bound above zero at ``confidence``), of the
threshold's size (the point estimate at least half of it, the upper bound at or above it), and not slowing
down. Once called, a leak stays a leak (pass the previous verdict as ``previous``) until the evidence says
the growth stopped: a drop, a recent slope significantly below the leak's, or no significant growth left.

Costs: O(n) to validate and bin, plus O(max_bins²) for the slope; well under a millisecond for the few
hundred points the profiler keeps (``python -m benchmarks.leak_bench`` measures it).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any, Literal

from ..config import fraction, positive_int, positive_number, seconds
from ..errors import ConfigurationError

Status = Literal["collecting", "no_growth", "growing", "warming_up", "cycling", "leak"]

#: The statuses in plain words, as every output shows them.
LABELS: dict[str, str] = {
    "collecting": "collecting data",
    "no_growth": "no growth",
    "growing": "growing below the threshold",
    "warming_up": "warming up",
    "cycling": "cache cycling",
    "leak": "leak",
}

# A jump between neighbouring bins is a step (or a drop) when it exceeds this many robust scales of the
# bins' differences.
_JUMP_Z = 6.0
# ... and this share of the series' range (a sawtooth's fall or a step is a large part of what moves).
_JUMP_RANGE = 0.15
# The smallest difference that can be a jump, in bytes (a few pages: quantised flat series have no scale).
_JUMP_FLOOR = 64 * 1024.0
# Cap on the bins' autocorrelation (beyond it the interval is infinite in all but name).
_RHO_MAX = 0.97
# One-sided normal quantiles: "the recent slope is significantly below the whole window's" (to call a leak;
# to release one already called: stricter, so a steady leak does not flap).
_SLOWING_P = 0.999
# ... and by a margin that matters: a recent slope at this share of the window's or more is not slowing.
_SLOW_SHARE = 0.75
_RELEASE_P = 0.99999
# The shortest recent window judged on its own (seconds).
_RECENT_WINDOW_MIN = 300.0
# The recent parts of the window whose slope must not have slowed down, as fractions of the span.
_RECENT = (0.5, 0.25, 0.125, 0.0625)
# ... and the newest seconds, whatever the span (a ramp that stopped shows it there first).
_RECENT_SECONDS = (30.0, 60.0, 120.0)
_RECENT_MIN_SAMPLES = 12
_RELEASE_MIN_SAMPLES = 28
# The newest samples a recent part's own lag-1 correlation is estimated on.
_RAW_RHO_SAMPLES = 128
# The lag (samples) whose variogram stands for the noise's whole variance when a leak is to be released:
# long enough for noise correlated over seconds, short enough that growth which stopped does not count.
_SILL_LAG = 12
# A leak's point estimate must be at least this share of the threshold.
_MIN_SHARE = 0.5
# Fewest troughs (low points after drops) a leak under cache cycles is judged on.
_MIN_TROUGHS = 6
# The newer half of the troughs must rise at least at this share of the whole set's rate.
_TROUGH_KEEP = 0.5
# Winsorising limit for residual scales, in robust sigmas.
_CLIP = 3.0
_PAGE = 4096.0


@dataclasses.dataclass(frozen=True, slots=True)
class TrendVerdict:
    """The outcome of one analysis. All rates in bytes per second, times in seconds, sizes in bytes.

    ``status``: ``collecting`` (not enough data yet: ``seconds_to_verdict`` says how long until there is),
    ``no_growth``, ``growing`` (significant growth below the threshold), ``warming_up`` (growth that is
    slowing down), ``cycling`` (memory is given back in drops: a cache filling and flushing), ``leak``.
    ``label`` is the status in plain words; ``explain()`` one sentence with the numbers.

    ``slope`` is the growth rate the status rests on (within steps; of the troughs when cycling) and
    ``[slope_low, slope_high]`` its two-sided interval at ``confidence``; ``has_slope`` says whether there
    is one at all (not while collecting). ``recent_slope`` is the slowest of the recent parts' slopes.
    ``samples``/``span`` say how much evidence was used, ``level`` the fitted value at the last sample and
    ``seconds_to_limit`` the projected time until ``limit`` at the current slope (``None`` if no limit or no
    growth), like Prometheus ``predict_linear``. ``change_point`` is the time of the newest step or drop.
    """

    status: Status
    is_leak: bool
    slope: float
    slope_low: float
    slope_high: float
    confidence: float
    threshold: float
    samples: int
    total_samples: int
    span: float
    level: float
    significant: bool = False
    persistent: bool = False
    change_point: float | None = None
    autocorrelation: float = 0.0
    limit: float | None = None
    seconds_to_limit: float | None = None
    seconds_to_verdict: float | None = None
    recent_slope: float | None = None
    steps: int = 0
    drops: int = 0
    reason: str = ""

    @property
    def has_slope(self) -> bool:
        """False while collecting: there is no rate to show (a 0 would read as "healthy")."""
        return self.status != "collecting"

    @property
    def label(self) -> str:
        """The status in plain words ("collecting data", "no growth", ..., "leak")."""
        return LABELS[self.status]

    def explain(self) -> str:
        """One line in words: the status and why, with the numbers it rests on."""
        return f"{self.label}: {self.reason}" if self.reason else self.label

    def predict(self, seconds_ahead: float) -> float:
        """The value expected ``seconds_ahead`` after the last sample at the current slope (bytes)."""
        return self.level + self.slope * seconds_ahead

    def as_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict (non-finite numbers become ``None``), with ``label``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            out[f.name] = v
        out["label"] = self.label
        out["has_slope"] = self.has_slope
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class TrendAnalyzer:
    """Judges (time, bytes) series. Immutable and thread-safe; one instance can serve many series.

    ``threshold``: growth in bytes/s that counts as a leak (default 1000 B/s).
    ``confidence``: one-sided confidence of "it grows" (0.999 keeps repeated analyses of a flat series,
    once every few seconds for weeks, from raising alarms). ``min_samples``/``min_span``: below these the
    status is ``collecting``. ``max_bins``: bound on the work per analysis. ``limit``: bytes for the
    time-to-limit projection. ``min_leak_span``: the fewest seconds of samples a leak is called on.
    Bad values raise ConfigurationError naming the parameter.
    """

    threshold: float = 1000.0
    confidence: float = 0.999
    min_samples: int = 20
    min_span: float = 60.0
    max_bins: int = 60
    limit: float | None = None
    min_leak_span: float = 80.0

    def __post_init__(self) -> None:
        positive_number("threshold", self.threshold)
        fraction("confidence", self.confidence)
        if not 0.5 < self.confidence < 1.0:
            raise ConfigurationError("confidence", self.confidence, "must be between 0.5 and 1 (exclusive)")
        positive_int("min_samples", self.min_samples, minimum=8)
        seconds("min_span", self.min_span)
        seconds("min_leak_span", self.min_leak_span)
        positive_int("max_bins", self.max_bins, minimum=12)
        if self.limit is not None:
            positive_number("limit", self.limit)

    def analyze_samples(
        self, samples: Iterable[tuple[float, float]], *, previous: TrendVerdict | None = None
    ) -> TrendVerdict:
        """Like :meth:`analyze` for an iterable of ``(timestamp, bytes)`` pairs."""
        ts: list[float] = []
        ys: list[float] = []
        for t, y in samples:
            ts.append(t)
            ys.append(y)
        return self.analyze(ts, ys, previous=previous)

    def analyze(
        self, times: Sequence[float], values: Sequence[float], *, previous: TrendVerdict | None = None
    ) -> TrendVerdict:
        """The verdict for ``values`` (bytes) observed at ``times`` (seconds, strictly increasing).

        ``previous``: the verdict of the same series a moment ago. A leak it called stays a leak until the
        growth has stopped (no flapping on a steady leak); nothing else is carried over.

        Raises ConfigurationError when the two sequences differ in length, a timestamp is NaN/infinite,
        not strictly increasing (duplicates included), or a value is NaN/infinite.
        """
        ts, ys = _validated(times, values)
        n = len(ts)
        span = ts[-1] - ts[0] if n else 0.0
        if n < self.min_samples or span < self.min_span or span <= 0.0:
            return self._collecting(ts, ys)
        was_leak = previous is not None and previous.is_leak
        verdict = self._judge(ts, ys, was_leak)
        if (
            verdict.status not in ("no_growth", "growing")
            or verdict.slope_high < self.threshold
            or span < 2 * _RECENT_WINDOW_MIN
        ):
            return verdict
        # A leak that accelerates is no line over the whole window (its residuals bend, and their
        # autocorrelation widens the interval): the recent half is judged on its own as well.
        half = bisect_left(ts, ts[-1] - span / 2.0)
        recent = self._judge(ts[half:], ys[half:], was_leak, drift=False)
        if recent.is_leak and recent.slope > verdict.slope:
            return dataclasses.replace(
                recent, total_samples=n, reason=recent.reason + f" (the newest half of {_duration(span)})"
            )
        return verdict

    def _judge(self, ts: list[float], ys: list[float], was_leak: bool, *, drift: bool = True) -> TrendVerdict:
        n = len(ts)
        span = ts[-1] - ts[0]
        bt, by, bounds = _bins(ts, ys, min(self.max_bins, max(n // 3, 6)))
        cuts = _jumps(bt, by)
        drops = [c for c in cuts if c.size < 0.0]
        segments = _segments(len(bt), cuts)
        fit = _segmented_fit(bt, by, segments, ts=ts, ys=ys, bounds=bounds)
        dof = max(2.0, (fit.used - len(segments) - 1) * (1.0 - fit.rho) / (1.0 + fit.rho))
        q_one = _t_quantile(self.confidence, dof)
        q_two = _t_quantile(1.0 - (1.0 - self.confidence) / 2.0, dof)
        slope, se = fit.slope, fit.se
        low_one = slope - q_one * se
        significant = low_one > 0.0
        if drift and not significant and span >= 2.0 * self.min_leak_span and slope > 0.0:
            # Growth whose rate varies (a leak that follows the traffic) bends away from any line, and the
            # bent residuals' autocorrelation hides it. Judged as a drift instead (the bins' increments),
            # it shows; stationary noise, however wandering, has increments that sum to almost nothing.
            drifting = _drift(bt, by, segments)
            if drifting is not None:
                d_slope, d_se, d_dof = drifting
                d_q_one = _t_quantile(self.confidence, d_dof)
                if d_slope - d_q_one * d_se > 0.0:
                    slope, se, dof = d_slope, d_se, d_dof
                    q_one = d_q_one
                    q_two = _t_quantile(1.0 - (1.0 - self.confidence) / 2.0, dof)
                    low_one = slope - q_one * se
                    significant = True
        # A leak is never called on less than min_leak_span of samples: a minute of a slow ripple or of a
        # warm-up is a straight rising line, and a minute of wandering noise says little of its own scale.
        reaches = (
            span >= self.min_leak_span
            and slope >= _MIN_SHARE * self.threshold
            and slope + q_one * se >= self.threshold
        )
        change_at = cuts[-1].time if cuts else None

        # Is the recent growth as fast as the window's? (Only asked when there is growth to slow down.)
        recent: float | None = None
        slowing = stalled = False
        if significant or was_leak:
            start_after = change_at if cuts else None
            # The noise of the newest quarter, at least 60 samples (where the recent parts lie; growth
            # that stopped before it would pass for noise).
            newest = min(bisect_left(ts, ts[-1] - span / 4.0), max(len(ts) - 60, 0))
            noise = _noise(ts[newest:], ys[newest:]) if was_leak else (0.0, 0.0)
            p_slow = _RELEASE_P if was_leak else _SLOWING_P
            starts = [ts[-1] - part * span for part in _RECENT]
            starts += [ts[-1] - sec for sec in _RECENT_SECONDS if sec < span * 0.5]
            for since in starts:
                tail = _recent_fit(ts, ys, since, after=start_after, rho_bins=fit.raw_rho)
                if tail is not None and was_leak:
                    # Releasing a leak: the error of a short part's slope from the window's noise, not the
                    # part's own residuals (a line through a minute of wandering noise soaks up the wander).
                    floor = _slope_error(ts, since, after=start_after, noise=noise)
                    tail = (tail[0], max(tail[1], floor), tail[2], tail[3])
                if tail is None:
                    continue
                t_slope, t_se, t_dof, t_n = tail
                if was_leak and t_n < _RELEASE_MIN_SAMPLES:
                    continue  # a leak called is released on longer evidence than it was called on
                recent = t_slope if recent is None else min(recent, t_slope)
                if t_slope < _SLOW_SHARE * slope and t_slope + _t_quantile(p_slow, t_dof) * t_se < slope:
                    slowing = True
                if t_slope + _t_quantile(p_slow, t_dof) * t_se < _MIN_SHARE * self.threshold:
                    stalled = True
        persistent = significant and not slowing and not stalled

        status: Status
        level = fit.level
        troughs: _Troughs | None = None
        if drops:
            troughs = _trough_fit(ts, ys, bounds, drops, self.confidence)
            last_piece = _last_piece_is_new_growth(bt, by, drops)
            line_leak = significant and reaches and persistent and last_piece
            trough_leak = (
                troughs is not None
                and troughs.low > 0.0
                and (troughs.slope >= _MIN_SHARE * self.threshold and troughs.high >= self.threshold)
            )
            is_leak = line_leak or trough_leak
            if trough_leak and not line_leak and troughs is not None:
                slope, low_one = troughs.slope, troughs.low
                se = (troughs.slope - troughs.low) / q_one if q_one > 0 else math.inf
            status = "leak" if is_leak else "cycling"
        else:
            is_leak = significant and reaches and persistent
            if is_leak:
                status = "leak"
            elif significant and (slowing or (stalled and slope >= _MIN_SHARE * self.threshold)):
                status = "warming_up"
            elif significant:
                status = "growing"
            else:
                status = "no_growth"

        kept = False
        # A leak called a moment ago stays called while the growth goes on: only a drop, a recent slope
        # significantly below the leak's or no growth at all releases it.
        if (
            was_leak
            and not is_leak
            and not drops
            and not slowing
            and not stalled
            and slope > 0.0
            and (low_one > 0.0 or slope >= _MIN_SHARE * self.threshold)
        ):
            is_leak, status, kept = True, "leak", True

        reason = self._reason(
            status,
            slope=slope,
            low=low_one,
            high=slope + q_one * se,
            span=span,
            n=n,
            recent=recent,
            slowing=slowing,
            troughs=troughs,
            kept=kept,
            steps=len(cuts) - len(drops),
            drops=len(drops),
        )
        return TrendVerdict(
            status=status,
            is_leak=is_leak,
            slope=slope,
            slope_low=slope - q_two * se if troughs is None or status != "leak" else low_one,
            slope_high=slope + q_two * se,
            confidence=self.confidence,
            threshold=self.threshold,
            samples=n,
            total_samples=n,
            span=span,
            level=level,
            significant=significant,
            persistent=persistent,
            change_point=change_at,
            autocorrelation=fit.rho,
            limit=self.limit,
            seconds_to_limit=_time_to(self.limit, level, slope),
            recent_slope=recent,
            steps=len(cuts) - len(drops),
            drops=len(drops),
            reason=reason,
        )

    def _reason(
        self,
        status: Status,
        *,
        slope: float,
        low: float,
        high: float,
        span: float,
        n: int,
        recent: float | None,
        slowing: bool,
        troughs: _Troughs | None,
        kept: bool,
        steps: int,
        drops: int,
    ) -> str:
        conf = f"{self.confidence:.3g}"
        over = f"over {_duration(span)} ({n} samples)"
        extra = []
        if steps:
            extra.append(f"{steps} step{'s' if steps > 1 else ''} set aside")
        if drops:
            extra.append(f"{drops} drop{'s' if drops > 1 else ''}")
        tail = f"; {', '.join(extra)}" if extra else ""
        if status == "leak":
            if troughs is not None and troughs.slope == slope:
                return (
                    f"the low points after each of {troughs.count} drops rise at {_rate(slope)} (at least "
                    f"{_rate(max(low, 0.0))} at {conf} confidence), threshold {_rate(self.threshold)}, {over}"
                )
            head = "still grows" if kept else "grows"
            return (
                f"memory {head} at {_rate(slope)} (at least {_rate(max(low, 0.0))} at {conf} confidence), "
                f"threshold {_rate(self.threshold)}, {over}{tail}"
            )
        if status == "cycling":
            return (
                f"memory is given back in drops ({drops}); the low points after them do not rise at the "
                f"threshold's rate ({_rate(self.threshold)}), {over}"
            )
        if status == "warming_up":
            why = (
                f"the recent growth ({_rate(recent or 0.0)}) is well below the window's ({_rate(slope)})"
                if slowing
                else f"the recent growth ({_rate(recent or 0.0)}) is below half the threshold"
            )
            return f"growth is slowing down: {why}, {over}{tail}"
        if status == "growing" and slope >= self.threshold and span < self.min_leak_span:
            return (
                f"memory grows at {_rate(slope)}, above the {_rate(self.threshold)} threshold, but a leak is "
                f"called on at least {_duration(self.min_leak_span)} of samples, {over}{tail}"
            )
        if status == "growing":
            return (
                f"memory grows at {_rate(slope)} (at least {_rate(max(low, 0.0))}, at most {_rate(high)}), "
                f"below the {_rate(self.threshold)} threshold, {over}{tail}"
            )
        return (
            f"no significant growth: {_rate(slope)}, between {_rate(low)} and {_rate(high)} at {conf} "
            f"confidence, {over}{tail}"
        )

    def _collecting(self, ts: list[float], ys: list[float]) -> TrendVerdict:
        n = len(ts)
        span = (ts[-1] - ts[0]) if n else 0.0
        wait_span = max(self.min_span - span, 0.0)
        wait_samples = 0.0
        if n < self.min_samples:
            interval = span / (n - 1) if n >= 2 and span > 0 else None
            wait_samples = (self.min_samples - n) * interval if interval is not None else math.nan
        wait = max(wait_span, wait_samples) if not math.isnan(wait_samples) else None
        if wait is not None and wait == 0.0:
            wait = None
        needs = (
            f"{n} samples over {_duration(span)}; a verdict needs {self.min_samples} over "
            f"{_duration(self.min_span)}"
        )
        if wait is not None:
            needs += f" (about {_duration(wait)} more)"
        return TrendVerdict(
            status="collecting",
            is_leak=False,
            slope=0.0,
            slope_low=-math.inf,
            slope_high=math.inf,
            confidence=self.confidence,
            threshold=self.threshold,
            samples=n,
            total_samples=n,
            span=span,
            level=ys[-1] if ys else 0.0,
            limit=self.limit,
            seconds_to_verdict=wait,
            reason=needs,
        )


class LeakTracker:
    """Feeds a :class:`TrendAnalyzer` one sample at a time, as a monitor sees them.

    Keeps the samples of the last ``window`` seconds in at most ``max_points`` points (neighbours merge
    into their mean when there are too many, so memory and work stay bounded however long it runs),
    judges them at most every ``check_every`` seconds of sample time, and passes each verdict on to the
    next judgement so a leak once called stays called until the growth stops.
    """

    __slots__ = (
        "_analyzer",
        "_block",
        "_check_every",
        "_last_check",
        "_max_points",
        "_pending",
        "_points",
        "_verdict",
        "window",
    )

    def __init__(
        self,
        analyzer: TrendAnalyzer | None = None,
        *,
        window: float = 3600.0,
        check_every: float = 5.0,
        max_points: int = 720,
    ) -> None:
        self._analyzer = analyzer if analyzer is not None else TrendAnalyzer()
        self.window = positive_number("window", window)
        self._check_every = float(seconds("check_every", check_every) or 0.0)
        self._max_points = positive_int("max_points", max_points, minimum=2 * self._analyzer.min_samples)
        self._points: collections.deque[tuple[float, float, int]] = collections.deque()
        self._pending: list[tuple[float, float]] = []
        self._block = 1
        self._last_check = -math.inf
        self._verdict = self._analyzer.analyze([], [])

    @property
    def analyzer(self) -> TrendAnalyzer:
        return self._analyzer

    @property
    def verdict(self) -> TrendVerdict:
        """The newest verdict (``collecting`` until there is enough data)."""
        return self._verdict

    def series(self) -> tuple[list[float], list[float]]:
        """The points the next judgement will see: ``(times, values)``."""
        points = list(self._points)
        if self._pending:
            points.append(_mean_point(self._pending))
        return [p[0] for p in points], [p[1] for p in points]

    def add(self, t: float, value: float) -> TrendVerdict:
        """Add one sample and return the current verdict.

        A sample whose time is not after the previous one's is ignored (a clock that stepped back must
        not reorder the series); a non-finite value raises ConfigurationError naming it.
        """
        t = float(t)
        value = float(value)
        if not math.isfinite(t):
            raise ConfigurationError("t", t, "must be a finite number of seconds")
        if not math.isfinite(value):
            raise ConfigurationError("value", value, "must be a finite number of bytes")
        last = self._pending[-1][0] if self._pending else (self._points[-1][0] if self._points else -math.inf)
        if t <= last:
            return self._verdict
        self._pending.append((t, value))
        if len(self._pending) >= self._block:
            self._points.append(_mean_point(self._pending))
            self._pending.clear()
        while self._points and self._points[0][0] < t - self.window:
            self._points.popleft()
        if len(self._points) >= self._max_points:
            old = list(self._points)
            merged = [_merge_points(a, b) for a, b in zip(old[::2], old[1::2], strict=False)]
            if len(old) % 2:
                merged.append(old[-1])
            self._points = collections.deque(merged)
            self._block *= 2
        # Judged every check_every seconds; on every sample while collecting (the first verdict comes as
        # soon as there is one) and, while a leak is called, on a sample well below the fitted level (a
        # drop that ends the leak shows at once).
        v = self._verdict
        due = t - self._last_check >= self._check_every
        if due or v.status == "collecting" or (v.is_leak and value < v.level - _JUMP_FLOOR):
            self._last_check = t
            ts, ys = self.series()
            self._verdict = self._analyzer.analyze(ts, ys, previous=self._verdict)
        return self._verdict

    def reset(self) -> None:
        """Forget every sample (after a restart of what is measured, for example)."""
        self._points.clear()
        self._pending.clear()
        self._block = 1
        self._last_check = -math.inf
        self._verdict = self._analyzer.analyze([], [])


def analyze_trend(
    samples: Iterable[tuple[float, float]], *, threshold: float = 1000.0, **options: Any
) -> TrendVerdict:
    """One-shot analysis of ``(timestamp, bytes)`` pairs; ``options`` are :class:`TrendAnalyzer` fields."""
    return TrendAnalyzer(threshold=threshold, **options).analyze_samples(samples)


def theil_sen(times: Sequence[float], values: Sequence[float]) -> float:
    """The Theil-Sen slope (median of pairwise slopes), O(n²): for short series or bins. 0.0 if n < 2."""
    slopes: list[float] = []
    ts, ys = list(times), list(values)
    for i in range(len(ts) - 1):
        ti, yi = ts[i], ys[i]
        slopes.extend([(y - yi) / (t - ti) for t, y in zip(ts[i + 1 :], ys[i + 1 :], strict=True) if t != ti])
    return _median(slopes) if slopes else 0.0


def time_to_limit(limit: float, level: float, slope: float) -> float | None:
    """Seconds until ``level`` reaches ``limit`` at ``slope`` B/s; 0 if already there, None if never."""
    return _time_to(limit, level, slope)


# --- internals ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Cut:
    index: int  # the first bin of the piece after the jump
    size: float  # bytes, negative for a drop
    time: float
    skip: int | None  # a bin straddling the jump, left out of every piece


@dataclasses.dataclass(frozen=True, slots=True)
class _Fit:
    slope: float
    se: float
    rho: float  # of the bins' residuals
    raw_rho: float  # of the samples' residuals (lag 1)
    used: int  # bins used
    level: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Troughs:
    slope: float
    low: float
    high: float
    count: int


def _mean_point(samples: list[tuple[float, float]]) -> tuple[float, float, int]:
    m = len(samples)
    return (sum(s[0] for s in samples) / m, sum(s[1] for s in samples) / m, m)


def _merge_points(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float, int]:
    m = a[2] + b[2]
    return ((a[0] * a[2] + b[0] * b[2]) / m, (a[1] * a[2] + b[1] * b[2]) / m, m)


def _bins(
    ts: list[float], ys: list[float], max_bins: int
) -> tuple[list[float], list[float], list[tuple[int, int]]]:
    """At most ``max_bins`` bins of equal sample count: mean time, median value, and sample index range."""
    n = len(ts)
    if n <= max_bins:
        return list(ts), list(ys), [(i, i + 1) for i in range(n)]
    bt: list[float] = []
    by: list[float] = []
    bounds: list[tuple[int, int]] = []
    for b in range(max_bins):
        lo = b * n // max_bins
        hi = (b + 1) * n // max_bins
        bt.append(sum(ts[lo:hi]) / (hi - lo))
        by.append(_median(ys[lo:hi]))
        bounds.append((lo, hi))
    return bt, by, bounds


def _jumps(bt: list[float], by: list[float]) -> list[_Cut]:
    """Steps and drops: differences between neighbouring bins (or across one straddling bin) far beyond
    the usual ones, once the common rate is taken out."""
    k = len(by)
    if k < 8:
        return []
    d = [by[i + 1] - by[i] for i in range(k - 1)]
    dt = [bt[i + 1] - bt[i] for i in range(k - 1)]
    rate = _median([a / b for a, b in zip(d, dt, strict=True)])
    r = [a - rate * b for a, b in zip(d, dt, strict=True)]
    centre = _median(r)
    scale = 1.4826 * _median([abs(x - centre) for x in r])
    limit = max(_JUMP_Z * scale, _JUMP_RANGE * (max(by) - min(by)), _JUMP_FLOOR)
    cuts: list[_Cut] = []

    def holds(before: int, after: int, size: float) -> bool:
        # The new level holds: the bins after the jump stay beyond the bins before it by half the jump (a
        # burst or a spike that comes straight back is no step, and no cache flush).
        a = by[max(before - 2, 0) : before + 1]
        b = by[after : after + 3]
        if len(b) < 2:
            return True  # at the newest bins: a jump too fresh to confirm counts (it cannot be a trend yet)
        moved = _median(b) - _median(a)
        return moved * size > 0 and abs(moved) > abs(size) / 2.0

    i = 0
    while i < k - 1:
        if abs(r[i]) > limit and holds(i, i + 1, d[i]):
            cuts.append(_Cut(i + 1, d[i], (bt[i] + bt[i + 1]) / 2.0, None))
            i += 1
            continue
        if (
            i + 1 < k - 1
            and abs(r[i + 1]) <= limit
            and r[i] * r[i + 1] > 0
            and abs(r[i] + r[i + 1]) > limit
            and holds(i, i + 2, d[i] + d[i + 1])
        ):
            cuts.append(_Cut(i + 2, d[i] + d[i + 1], bt[i + 1], i + 1))
            i += 2
            continue
        i += 1
    return cuts


def _segments(k: int, cuts: list[_Cut]) -> list[list[int]]:
    """Bin indices of each piece between jumps (straddling bins left out)."""
    skip = {c.skip for c in cuts if c.skip is not None}
    edges = [0, *[c.index for c in cuts], k]
    pieces = []
    for lo, hi in itertools.pairwise(edges):
        piece = [i for i in range(lo, hi) if i not in skip]
        if piece:
            pieces.append(piece)
    return pieces


def _segmented_fit(
    bt: list[float],
    by: list[float],
    pieces: list[list[int]],
    *,
    ts: list[float],
    ys: list[float],
    bounds: list[tuple[int, int]],
) -> _Fit:
    """One slope for every piece (Theil-Sen over pairs within a piece), one level per piece; its error from
    the residuals' scale and autocorrelation."""
    t0 = bt[0]
    t_last = ts[-1]
    slopes: list[float] = []
    for piece in pieces:
        for a_i, a in enumerate(piece):
            ta, ya = bt[a], by[a]
            slopes.extend([(by[b] - ya) / (bt[b] - ta) for b in piece[a_i + 1 :]])
    slope = _median(slopes) if slopes else 0.0
    resid: list[list[float]] = []
    sxx = 0.0
    level = by[-1]
    levels: list[float] = []
    for piece in pieces:
        offsets = [by[i] - slope * (bt[i] - t0) for i in piece]
        level_at = _median(offsets)
        levels.append(level_at)
        resid.append([o - level_at for o in offsets])
        mean_t = sum(bt[i] for i in piece) / len(piece)
        sxx += sum((bt[i] - mean_t) ** 2 for i in piece)
        level = level_at + slope * (t_last - t0)
    flat = [x for piece in resid for x in piece]  # (level: the last piece's line at the last sample)
    used = len(flat)
    dof = max(used - len(pieces) - 1, 1)
    mad = 1.4826 * _median([abs(x) for x in flat]) if flat else 0.0
    lim = _CLIP * mad
    clipped = [[min(max(x, -lim), lim) for x in piece] for piece in resid] if mad > 0.0 else resid
    ss = sum(x * x for piece in clipped for x in piece)
    scale = math.sqrt(ss / dof)
    rho = 0.0
    if ss > 0.0:
        r1 = sum(p[i] * p[i + 1] for p in clipped for i in range(len(p) - 1)) / ss
        r2 = sum(p[i] * p[i + 2] for p in clipped for i in range(len(p) - 2)) / ss
        rho = max(r1, math.sqrt(r2) if r2 > 0.0 else 0.0)
        rho = rho + (1.0 + 3.0 * rho) / max(used, 1)  # Kendall's bias correction of the lag-1 estimate
        rho = min(max(rho, 0.0), _RHO_MAX)
    # A few dozen bins under-estimate the correlation of noise that wanders for minutes: the samples' own
    # lag-1 correlation around the fit, carried to the bins' spacing as AR(1) noise would, is a floor.
    raw: list[float] = []
    for piece, piece_level in zip(pieces, levels, strict=True):
        for i in piece:
            lo, hi = bounds[i]
            raw.extend(
                [y - piece_level - slope * (t - t0) for t, y in zip(ts[lo:hi], ys[lo:hi], strict=True)]
            )
    raw_rho = 0.0
    m = len(raw)
    raw_mad = 1.4826 * _median([abs(x) for x in raw[:: max(1, m // 256)]]) if m else 0.0
    if raw_mad > 0.0 and m > used:
        lim_raw = _CLIP * raw_mad
        raw = [min(max(x, -lim_raw), lim_raw) for x in raw]
        raw_ss = sum(x * x for x in raw)
        if raw_ss > 0.0:
            raw_rho = sum(raw[i] * raw[i + 1] for i in range(m - 1)) / raw_ss
            raw_rho = min(max(raw_rho + (1.0 + 3.0 * raw_rho) / m, 0.0), 0.999)
            rho = min(max(rho, raw_rho ** (m / used)), _RHO_MAX)
    inflation = (1.0 + rho) / (1.0 - rho) / 0.9  # AR(1) variance inflation, Theil-Sen efficiency ~0.9
    se = scale * math.sqrt(inflation / sxx) if sxx > 0.0 else math.inf
    return _Fit(slope=slope, se=se, rho=rho, raw_rho=raw_rho, used=used, level=level)


def _drift(bt: list[float], by: list[float], pieces: list[list[int]]) -> tuple[float, float, float] | None:
    """The mean rate of the bins' increments within pieces, its standard error (robust scale of the
    increments' rates) and degrees of freedom; None with too few increments."""
    rises = 0.0
    time = 0.0
    rates: list[float] = []
    for piece in pieces:
        for a, b in itertools.pairwise(piece):
            dt = bt[b] - bt[a]
            if dt <= 0.0:
                continue
            rises += by[b] - by[a]
            time += dt
            rates.append((by[b] - by[a]) / dt)
    k = len(rates)
    if k < 8 or time <= 0.0:
        return None
    mean = rises / time
    centre = _median(rates)
    scale = 1.4826 * _median([abs(r - centre) for r in rates])
    sd = max(scale, math.sqrt(sum((r - mean) ** 2 for r in rates) / (k - 1)) / 2.0)
    # Increments of neighbouring bins share a bin: their rates correlate (-0.5 for white noise, which makes
    # this error conservative; near 0 for drifting growth).
    return mean, sd / math.sqrt(k), float(k - 1)


def _noise(ts: list[float], ys: list[float]) -> tuple[float, float]:
    """The noise's scale (bytes) and lag-1 correlation from the samples' variogram: half the variance of
    differences one sample apart and _SILL_LAG samples apart, each around its median (which takes a steady
    growth out), robustly (MAD). Unlike residuals around a line, differences do not soak up the wander."""
    n = len(ys)
    if n < 8:
        return 0.0, 0.0

    def half_var(lag: int) -> float:
        step = max(1, (n - lag) // 256)
        d = [ys[i + lag] - ys[i] for i in range(0, n - lag, step)]
        centre = _median(d)
        mad = 1.4826 * _median([abs(x - centre) for x in d])
        return mad * mad / 2.0

    v1 = half_var(1)
    sill = max(v1, half_var(min(_SILL_LAG, n // 3)))
    rho = min(max(1.0 - v1 / sill, 0.0), _RHO_MAX) if sill > 0.0 else 0.0
    return math.sqrt(sill), rho


def _slope_error(ts: list[float], since: float, *, after: float | None, noise: tuple[float, float]) -> float:
    """The standard error of a least-squares slope over the samples after ``since`` under AR(1) noise of
    the given scale and lag-1 correlation."""
    start = bisect_left(ts, max(since, after) if after is not None else since)
    part = ts[start:]
    if len(part) < 3:
        return math.inf
    mean = sum(part) / len(part)
    sxx = sum((t - mean) ** 2 for t in part)
    sigma, rho = noise
    return sigma * math.sqrt((1.0 + rho) / (1.0 - rho) / sxx) if sxx > 0.0 else math.inf


def _recent_fit(
    ts: list[float], ys: list[float], since: float, *, after: float | None, rho_bins: float
) -> tuple[float, float, float, int] | None:
    """Slope, standard error, degrees of freedom and sample count of the samples after ``since`` (and after
    ``after``, the newest jump): Theil-Sen over up to 16 medians, the error of a least-squares slope on
    those medians under their autocorrelation (at least what the samples' correlation implies)."""
    start = bisect_left(ts, max(since, after) if after is not None else since)
    m = len(ts) - start
    if m < _RECENT_MIN_SAMPLES:
        return None
    rt, ry, _ = _bins(ts[start:], ys[start:], 16)
    if len(rt) < 6 or rt[-1] - rt[0] <= 0.0:
        return None
    t0 = rt[0]
    tc = [t - t0 for t in rt]
    slope = theil_sen(tc, ry)
    a = _median([y - slope * t for t, y in zip(tc, ry, strict=True)])
    resid = [y - a - slope * t for t, y in zip(tc, ry, strict=True)]
    mad = 1.4826 * _median([abs(x) for x in resid])
    if mad > 0.0:
        resid = [min(max(x, -_CLIP * mad), _CLIP * mad) for x in resid]
    k = len(resid)
    ss = sum(x * x for x in resid)
    scale = math.sqrt(ss / max(k - 2, 1))
    rho = 0.0
    if ss > 0.0:
        rho = sum(resid[i] * resid[i + 1] for i in range(k - 1)) / ss
        rho = rho + (1.0 + 3.0 * rho) / k
    # Sixteen medians under-estimate the correlation of wandering noise: the samples' own lag-1
    # correlation, carried to the medians' spacing as AR(1) noise would, is a floor.
    newest = max(start, len(ts) - _RAW_RHO_SAMPLES)  # enough for a lag-1 estimate, and O(1)
    raw = [y - a - slope * (t - t0) for t, y in zip(ts[newest:], ys[newest:], strict=True)]
    raw_mad = 1.4826 * _median([abs(x) for x in raw])
    if raw_mad > 0.0:
        raw = [min(max(x, -_CLIP * raw_mad), _CLIP * raw_mad) for x in raw]
    raw_ss = sum(x * x for x in raw)
    if raw_ss > 0.0:
        m_raw = len(raw)
        raw_rho = sum(raw[i] * raw[i + 1] for i in range(m_raw - 1)) / raw_ss
        raw_rho = min(max(raw_rho + (1.0 + 3.0 * raw_rho) / m_raw, 0.0), 0.999)
        rho = max(rho, raw_rho ** (m / k))
    rho = min(max(rho, 0.0), _RHO_MAX)
    mean_t = sum(tc) / k
    sxx = sum((t - mean_t) ** 2 for t in tc)
    se = scale * math.sqrt((1.0 + rho) / (1.0 - rho) / 0.9 / sxx) if sxx > 0.0 else math.inf
    return slope, se, max(2.0, (k - 2) * (1.0 - rho) / (1.0 + rho)), m


def _trough_fit(
    ts: list[float], ys: list[float], bounds: list[tuple[int, int]], drops: list[_Cut], confidence: float
) -> _Troughs | None:
    """The low point after each drop, and whether they rise: a leak under cache cycles. Each low point is
    the lowest sample of the first half of the piece after a drop (a bin's median would sit wherever the
    drop fell within the bin, and that phase drifts)."""
    points: list[tuple[float, float]] = []
    edges = [c.index for c in drops] + [len(bounds)]
    for lo, hi in itertools.pairwise(edges):
        if hi - lo < 1:
            continue
        first, last = bounds[lo][0], bounds[lo + max(1, (hi - lo) // 2) - 1][1]
        i = min(range(first, last), key=lambda j: ys[j])
        points.append((ts[i], ys[i]))
    m = len(points)
    if m < _MIN_TROUGHS:
        return None
    mean_t = sum(p[0] for p in points) / m
    mean_y = sum(p[1] for p in points) / m
    sxx = sum((p[0] - mean_t) ** 2 for p in points)
    if sxx <= 0.0:
        return None
    slope = sum((p[0] - mean_t) * (p[1] - mean_y) for p in points) / sxx
    ss = sum((p[1] - mean_y - slope * (p[0] - mean_t)) ** 2 for p in points)
    se = math.sqrt(ss / (m - 2) / sxx)
    qm = _t_quantile(confidence, float(m - 2)) if m - 2 >= 3 else _t_exact_small(confidence, m - 2)
    low = slope - qm * se
    newer = points[m // 2 :]
    if len(newer) >= 3 and low > 0.0:
        # The newer troughs must rise as well: a partly flushed cache's low points climb for a few cycles
        # to where flushing balances filling, then stop (a warm-up of the troughs, not a leak).
        nt = sum(p[0] for p in newer) / len(newer)
        ny = sum(p[1] for p in newer) / len(newer)
        nxx = sum((p[0] - nt) ** 2 for p in newer)
        newer_slope = sum((p[0] - nt) * (p[1] - ny) for p in newer) / nxx if nxx > 0.0 else 0.0
        if newer_slope < _TROUGH_KEEP * slope:
            low = min(low, 0.0)
    return _Troughs(slope=slope, low=low, high=slope + qm * se, count=m)


def _last_piece_is_new_growth(bt: list[float], by: list[float], drops: list[_Cut]) -> bool:
    """After drops, growth counts as a leak only if the piece since the newest drop has lasted well beyond
    every earlier cycle (2.5 times the longest) and risen above everything before the drop: the cycle seen
    so far would have dropped by now."""
    last = drops[-1]
    starts = [0] + [c.index for c in drops]
    lengths = [bt[min(b, len(bt) - 1)] - bt[a] for a, b in itertools.pairwise(starts)]
    piece = bt[-1] - bt[last.index] if last.index < len(bt) else 0.0
    if piece < 2.5 * max(lengths, default=0.0):
        return False
    before = by[: last.index - (1 if last.skip is not None else 0)]
    return bool(before) and by[-1] > max(before)


def _t_exact_small(p: float, dof: int) -> float:
    """Student's t quantile for 1 or 2 degrees of freedom (closed forms)."""
    if dof <= 1:
        return math.tan(math.pi * (p - 0.5))
    a = 4.0 * p * (1.0 - p)
    return (2.0 * p - 1.0) * math.sqrt(2.0 / a)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def _rate(bps: float) -> str:
    """A rate in words: 1,234 B/s, 12.3 KiB/s, 4.5 MiB/s (no e-notation)."""
    a = abs(bps)
    if a < 10_000:
        return f"{bps:,.0f} B/s"
    if a < 10 * 1024 * 1024:
        return f"{bps / 1024:,.1f} KiB/s"
    return f"{bps / 1024 / 1024:,.1f} MiB/s"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _validated(times: Sequence[float], values: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(times) != len(values):
        raise ConfigurationError(
            "values", f"<{len(values)} values>", f"must have one value per timestamp ({len(times)})"
        )
    ts = [float(t) for t in times]
    ys = [float(y) for y in values]
    prev = -math.inf
    for i, t in enumerate(ts):
        if not math.isfinite(t):
            raise ConfigurationError(f"times[{i}]", t, "timestamps must be finite")
        if t <= prev:
            raise ConfigurationError(
                f"times[{i}]", t, f"timestamps must be strictly increasing (previous is {prev!r})"
            )
        prev = t
    for i, y in enumerate(ys):
        if not math.isfinite(y):
            raise ConfigurationError(f"values[{i}]", y, "values must be finite numbers of bytes")
    return ts, ys


_NORMAL = NormalDist()


def _t_quantile(p: float, dof: float) -> float:
    """Student's t quantile by the Cornish-Fisher expansion (within 1% for dof >= 3, conservative below)."""
    z = _NORMAL.inv_cdf(p)
    if dof > 1e6:
        return z
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


def _time_to(limit: float | None, level: float, slope: float) -> float | None:
    if limit is None:
        return None
    if level >= limit:
        return 0.0
    if slope <= 0.0:
        return None
    return (limit - level) / slope


__all__ = [
    "LABELS",
    "LeakTracker",
    "Status",
    "TrendAnalyzer",
    "TrendVerdict",
    "analyze_trend",
    "theil_sen",
    "time_to_limit",
]
