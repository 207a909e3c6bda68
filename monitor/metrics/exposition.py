"""/metrics: every keywatch series, rendered once per change and served as cached bytes.

Per-token lines are cached against the TokenState object they came from (states are immutable
and replaced only when something changed), so an idle fleet of 10,000 tokens costs a join, not
a re-render. Nothing here touches a relay or the database: it reads what the poll cycle hands it.

A few families change between polls on their own (the event loop's lag): those are "live" sources,
rendered at every scrape and appended to the cached body, so they never force a re-render of it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor import __version__
from monitor.metrics.text import escape as _esc
from monitor.metrics.text import fmt_value, header, labels, sample
from monitor.policy import PolicyBook
from monitor.tokens import TokenState

__all__ = ["DURATION_BUCKETS", "Exposition", "Family", "Histogram", "JobHealth", "ProviderHealth"]

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family other components contribute (alerts, notifications, revocations)."""

    name: str
    kind: str
    help: str
    samples: Sequence[tuple[Mapping[str, str], float]]


@dataclass(slots=True)
class Histogram:
    """Cumulative bucket counts over DURATION_BUCKETS, as Prometheus histograms are."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
        self.sum += seconds
        self.count += 1


@dataclass(slots=True)
class ProviderHealth:
    up: bool = False
    last_success: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    duration: Histogram = field(default_factory=Histogram)  # the poll cycle, fetch to stored
    rules: Histogram = field(default_factory=Histogram)  # the alert engine's work on one cycle

    def observe_duration(self, seconds: float) -> None:
        self.duration.observe(seconds)


@dataclass(slots=True)
class JobHealth:
    """A scheduled job's runs (monitor.jobs), since the daemon started."""

    failures: int = 0
    last_success: float | None = None


# (name, type, help) of the per-token families, in render order.
_TOKEN_FAMILIES = (
    (
        "keywatch_token_spend_usd_total",
        "counter",
        "Spend observed on the token since keywatch first saw it, in USD.",
    ),
    ("keywatch_token_requests_total", "counter", "Requests on the token, where the relay reports them."),
    ("keywatch_token_spend_usd", "gauge", "Spend in the relay's current day or month window, in USD."),
    ("keywatch_token_budget_usd", "gauge", "Budget for the window, from config or the token's relay limits."),
    ("keywatch_token_budget_used_ratio", "gauge", "Window spend divided by the window budget."),
    ("keywatch_token_info", "gauge", "Token metadata; always 1."),
    ("keywatch_token_last_used_timestamp_seconds", "gauge", "When the relay says the token was last used."),
    ("keywatch_token_expiry_timestamp_seconds", "gauge", "When the token expires."),
    ("keywatch_token_anomaly_score", "gauge", "Spend anomaly score against the token's own baseline."),
    (
        "keywatch_token_spend_corrections_usd_total",
        "counter",
        "Dollars the relay took back (refunds, re-rating); never subtracted from the spend counter.",
    ),
)

TokenKey = tuple[str, str]  # (provider, token id)
ScoreSource = Callable[[], Mapping[TokenKey, float]]
FamilySource = Callable[[], Iterable[Family]]


_LineCache = dict["TokenKey", tuple[TokenState, float | None, tuple[str, ...]]]
# (tokens, scores, the other families' text, the policies and the line cache that go with them)
_Inputs = tuple[dict[str, Mapping[str, TokenState]], dict["TokenKey", float], str, PolicyBook, _LineCache]


def _deflated(body: bytes) -> tuple[bytes, zlib._Compress]:
    """The body deflated up to a sync point, and the compressor that can go on from there."""
    deflate = zlib.compressobj(5, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip wrapper
    return deflate.compress(body) + deflate.flush(zlib.Z_SYNC_FLUSH), deflate


class Exposition:
    def __init__(self, policies: PolicyBook) -> None:
        self._policies = policies
        # provider -> its token states, the poller's own mapping (replaced each cycle, never
        # changed in place): adopting a 100,000-token cycle is one assignment.
        self._tokens: dict[str, Mapping[str, TokenState]] = {}
        self._lines: dict[TokenKey, tuple[TokenState, float | None, tuple[str, ...]]] = {}
        self._health: dict[str, ProviderHealth] = {}
        self._jobs: dict[str, JobHealth] = {}
        self._scores: ScoreSource = dict
        self._sources: list[FamilySource] = []
        self._live: list[FamilySource] = []
        self._body: bytes | None = None
        # The cached body deflated up to a sync point, and the compressor that can go on from
        # there: each scrape finishes a copy of it with the live families (one gzip stream).
        self._gzipped: tuple[bytes, zlib._Compress] | None = None
        self._version = 0  # bumped by invalidate(): a body built from older inputs is not cached
        self._building = asyncio.Lock()  # concurrent scrapes after a poll wait for one build
        self.store_up = True  # False while the database refuses cycles (disk full, locked)

    # --- inputs -------------------------------------------------------------------------
    def set_policies(self, policies: PolicyBook) -> None:
        self._policies = policies
        self._lines = {}  # a new cache: a build in flight fills the old one, with the old policies
        self.invalidate()

    def set_tokens(self, provider: str, states: Mapping[str, TokenState]) -> None:
        """`states` is kept as it is: the caller hands a new mapping for every change."""
        self._tokens[provider] = states
        self.invalidate()

    def health(self, provider: str) -> ProviderHealth:
        return self._health.setdefault(provider, ProviderHealth())

    def retain_providers(self, names: Iterable[str]) -> None:
        keep = set(names)
        for name in [n for n in self._health if n not in keep]:
            del self._health[name]
        for name in [n for n in self._tokens if n not in keep]:
            del self._tokens[name]
        self.invalidate()

    def set_jobs(self, names: Iterable[str]) -> None:
        """The scheduled jobs: new ones start at 0 failures, jobs no longer scheduled go."""
        keep = set(names)
        self._jobs = {n: self._jobs.get(n) or JobHealth() for n in sorted(keep)}
        self.invalidate()

    def job_ran(self, name: str, *, ok: bool, at: float) -> None:
        job = self._jobs.setdefault(name, JobHealth())
        if ok:
            job.last_success = at
        else:
            job.failures += 1
        self.invalidate()

    def set_score_source(self, source: ScoreSource) -> None:
        self._scores = source

    def add_source(self, source: FamilySource) -> None:
        self._sources.append(source)

    def add_live_source(self, source: FamilySource) -> None:
        """A source read at every scrape (it must be cheap): its families are never cached."""
        self._live.append(source)

    def invalidate(self) -> None:
        self._body = None
        self._gzipped = None
        self._version += 1

    # --- output -------------------------------------------------------------------------
    def render(self) -> bytes:
        live = self._render_live()
        return self._cached() + live if live else self._cached()

    def render_gzip(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = _deflated(self._cached())
        return self._finish_gzip(self._gzipped)

    async def scrape(self, *, gzip: bool) -> bytes:
        """What /metrics serves. After a poll the body is built again, and at 100,000 tokens that
        is ~100 MB of text and its gzip: the inputs are read on the event loop (cheap), the text
        is assembled and compressed in a worker thread (zlib lets go of the GIL), and scrapes that
        arrive meanwhile wait for the same build instead of starting their own."""
        built = self._gzipped if gzip else self._body
        if built is None:
            async with self._building:
                if self._body is None or self._gzipped is None:
                    version, inputs = self._version, self._inputs()
                    body, deflated = await asyncio.to_thread(self._build, inputs)
                    if version == self._version:  # no poll landed meanwhile
                        self._body, self._gzipped = body, deflated
                else:
                    body, deflated = self._body, self._gzipped
            if gzip:
                return self._finish_gzip(deflated)
            live = self._render_live()
            return body + live if live else body
        return self.render_gzip() if gzip else self.render()

    def _finish_gzip(self, deflated: tuple[bytes, zlib._Compress]) -> bytes:
        head, deflate = deflated
        rest = deflate.copy()
        return head + rest.compress(self._render_live()) + rest.flush()

    def _cached(self) -> bytes:
        if self._body is None:
            self._body = self._assemble(self._inputs()).encode()
        return self._body

    def _build(self, inputs: _Inputs) -> tuple[bytes, tuple[bytes, zlib._Compress]]:
        body = self._assemble(inputs).encode()
        return body, _deflated(body)

    def _render_live(self) -> bytes:
        return "".join(_family_text(f) for source in self._live for f in source()).encode()

    def _inputs(self) -> _Inputs:
        """Everything the body is made of, read now (on the event loop): the token states as a
        list, the scores as a copy, the other families as text."""
        tail = [self._provider_families(), self._job_families()]
        tail.extend(_family_text(family) for source in self._sources for family in source())
        tail.append(header("keywatch_build_info", "gauge", "keywatch's version; always 1."))
        tail.append(sample("keywatch_build_info", labels({"version": __version__}), 1))
        return dict(self._tokens), dict(self._scores()), "".join(tail), self._policies, self._lines

    def _assemble(self, inputs: _Inputs) -> str:
        """The exposition text from `_inputs()`; safe in a worker thread (it touches only the
        per-token line cache, which nothing else iterates)."""
        tokens, scores, tail, policies, cache = inputs
        per_token = [
            _token_lines(cache, policies, key, state, scores.get(key))
            for provider, states in tokens.items()
            for key, state in (((provider, tid), st) for tid, st in states.items())
        ]
        if len(cache) > len(per_token) + len(per_token) // 2 + 64:  # gone tokens: drop their lines
            live = {(p, tid) for p, states in tokens.items() for tid in states}
            for key in [k for k in cache if k not in live]:
                cache.pop(key, None)
        parts: list[str] = []
        for i, (name, kind, help_text) in enumerate(_TOKEN_FAMILIES):
            parts.append(header(name, kind, help_text))
            parts.extend(lines[i] for lines in per_token)
        parts.append(tail)
        return "".join(parts)

    def _job_families(self) -> str:
        jobs = sorted(self._jobs.items())
        out = [
            header(
                "keywatch_job_failures_total",
                "counter",
                "Scheduled job runs that failed, by job, since the daemon started (each also logged once).",
            )
        ]
        out += [sample("keywatch_job_failures_total", labels({"job": n}), j.failures) for n, j in jobs]
        out.append(
            header(
                "keywatch_job_last_success_timestamp_seconds",
                "gauge",
                "When the scheduled job last ran to completion (a poll the relay failed completes too: "
                "see keywatch_poll_errors_total).",
            )
        )
        out += [
            sample("keywatch_job_last_success_timestamp_seconds", labels({"job": n}), j.last_success)
            for n, j in jobs
            if j.last_success is not None
        ]
        return "".join(out)

    def _provider_families(self) -> str:
        out: list[str] = [
            header("keywatch_store_up", "gauge", "0 while the database refuses to store poll cycles."),
            sample("keywatch_store_up", "", int(self.store_up)),
        ]
        names = sorted(self._health)
        out.append(header("keywatch_provider_up", "gauge", "1 when the provider's last poll succeeded."))
        out += [
            sample("keywatch_provider_up", labels({"provider": n}), int(self._health[n].up)) for n in names
        ]
        out.append(
            header(
                "keywatch_last_poll_success_timestamp_seconds",
                "gauge",
                "When the provider was last polled successfully.",
            )
        )
        for n in names:
            if self._health[n].last_success is not None:
                ts = self._health[n].last_success or 0.0
                out.append(
                    sample("keywatch_last_poll_success_timestamp_seconds", labels({"provider": n}), ts)
                )
        out.append(
            header("keywatch_poll_errors_total", "counter", "Failed polls and skipped tokens, by reason.")
        )
        for n in names:
            for reason, count in sorted(self._health[n].errors.items()):
                out.append(
                    sample("keywatch_poll_errors_total", labels({"provider": n, "reason": reason}), count)
                )
        out.append(header("keywatch_poll_retries_total", "counter", "Relay requests retried, by reason."))
        for n in names:
            for reason, count in sorted(self._health[n].retries.items()):
                out.append(
                    sample("keywatch_poll_retries_total", labels({"provider": n, "reason": reason}), count)
                )
        out.append(header("keywatch_poll_duration_seconds", "histogram", "How long one poll cycle took."))
        out += [_histogram("keywatch_poll_duration_seconds", n, self._health[n].duration) for n in names]
        out.append(
            header(
                "keywatch_rules_duration_seconds",
                "histogram",
                "How long the alert engine took on one poll cycle (rules, alert states, notification "
                "and response hand-off), on the event loop.",
            )
        )
        out += [_histogram("keywatch_rules_duration_seconds", n, self._health[n].rules) for n in names]
        return "".join(out)


def _histogram(name: str, provider: str, h: Histogram) -> str:
    out = [
        sample(f"{name}_bucket", labels({"provider": provider, "le": fmt_value(bound)}), count)
        for bound, count in zip(DURATION_BUCKETS, h.buckets, strict=True)
    ]
    out.append(sample(f"{name}_bucket", labels({"provider": provider, "le": "+Inf"}), h.count))
    out.append(sample(f"{name}_sum", labels({"provider": provider}), h.sum))
    out.append(sample(f"{name}_count", labels({"provider": provider}), h.count))
    return "".join(out)


def _family_text(family: Family) -> str:
    body = "".join(sample(family.name, labels(lbl), value) for lbl, value in family.samples)
    return header(family.name, family.kind, family.help) + body


def _token_lines(
    cache: _LineCache, policies: PolicyBook, key: TokenKey, state: TokenState, score: float | None
) -> tuple[str, ...]:
    cached = cache.get(key)
    if cached is not None and cached[0] is state and cached[1] == score:
        return cached[2]
    lines = _render_token(policies, state, score)
    cache[key] = (state, score, lines)
    return lines


def _render_token(policies: PolicyBook, s: TokenState, score: float | None) -> tuple[str, ...]:
    base = f'provider="{_esc(s.provider)}",token="{_esc(s.series)}"'
    lb = "{" + base + "}"
    spend_total = requests_total = windows = budgets = ratios = last_used = expiry = anomaly = ""
    corrections = ""
    budget = policies.budgets(s)
    mark = s.mark
    if s.usage_known:
        spend_total = f"keywatch_token_spend_usd_total{lb} {fmt_value(s.spend_total_usd)}\n"
        corrections = f"keywatch_token_spend_corrections_usd_total{lb} {fmt_value(s.corrections_usd_total)}\n"
        if mark is not None and mark.today_requests is not None:
            requests_total = f"keywatch_token_requests_total{lb} {s.requests_total}\n"
    for window, spent, limit in (
        ("day", s.day_usd, budget.day),
        ("month", s.month_usd, budget.month),
    ):
        wl = "{" + base + f',window="{window}"' + "}"
        if spent is not None:
            windows += f"keywatch_token_spend_usd{wl} {fmt_value(spent)}\n"
        if limit is not None:
            budgets += f"keywatch_token_budget_usd{wl} {fmt_value(limit)}\n"
            if spent is not None and limit > 0:
                ratios += f"keywatch_token_budget_used_ratio{wl} {fmt_value(spent / limit)}\n"
    info_labels = (
        f'{{{base},token_id="{_esc(s.token_id)}",status="{s.status}",'
        f'env="{_esc(s.env)}",project="{_esc(s.project)}"}}'
    )
    info = f"keywatch_token_info{info_labels} 1\n"
    if s.last_used_at is not None:
        last_used = f"keywatch_token_last_used_timestamp_seconds{lb} {fmt_value(s.last_used_at)}\n"
    if s.expires_at is not None:
        expiry = f"keywatch_token_expiry_timestamp_seconds{lb} {fmt_value(s.expires_at)}\n"
    if score is not None:
        anomaly = f"keywatch_token_anomaly_score{lb} {fmt_value(score)}\n"
    return (
        spend_total,
        requests_total,
        windows,
        budgets,
        ratios,
        info,
        last_used,
        expiry,
        anomaly,
        corrections,
    )
