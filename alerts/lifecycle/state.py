"""The alert lifecycle: inactive -> pending -> firing -> resolved, as Prometheus rules do it.

A finding must hold for `for_polls` consecutive evaluations before its alert fires; a firing alert
whose condition clears stays firing for `keep_firing_for` seconds. Missing data is not "fine":
alerts on subjects the caller could not evaluate (a provider that is down) or did not evaluate
(another provider's cycle) neither advance nor resolve. States are written to the store before
`evaluate` returns, and loaded on start, so a restart neither re-fires nor forgets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from alerts.lifecycle.records import Alert, Transition
from alerts.lifecycle.store import AlertStore
from alerts.model import AlertState, Finding
from monitor.pacing import drain, paced

__all__ = ["STICKY_ANNOTATIONS", "AlertTracker", "Subjects", "no_data_for_providers", "subject_predicate"]

# Set by the responder through AlertTracker.annotate; rules do not produce them, so they are kept
# for the rest of the episode instead of being dropped by the next evaluation.
STICKY_ANNOTATIONS = ("response", "quarantined", "next_steps")
VALUE_FLUSH_INTERVAL = 300.0  # seconds between writes of alerts whose only change is their value

# Which alerts a statement covers: a predicate on the alert's labels (with `rule` added), or
# label filters, each matching when all of its key=value pairs equal the alert's labels.
Subjects = Callable[[Mapping[str, str]], bool] | Iterable[Mapping[str, str]]


def subject_predicate(subjects: Subjects | None, *, default: bool) -> Callable[[Mapping[str, str]], bool]:
    if subjects is None:
        return lambda _labels: default
    if callable(subjects):
        return subjects
    filters = [dict(f) for f in subjects]
    return lambda labels: any(all(labels.get(k) == v for k, v in f.items()) for f in filters)


def no_data_for_providers(
    providers: Iterable[str], *, exempt_rules: Iterable[str] = ("provider_down",)
) -> Callable[[Mapping[str, str]], bool]:
    """`unknown=` for providers that could not be polled. `provider_down` is exempt: it is about
    the outage itself and has to advance (and later resolve) while the provider is down."""
    down = frozenset(providers)
    exempt = frozenset(exempt_rules)
    return lambda labels: labels.get("provider") in down and labels.get("rule") not in exempt


@dataclass(slots=True)
class _Plan:
    """One evaluation worked out, before anything is written or adopted."""

    now: float
    changed: list[Alert] = field(default_factory=list)  # written at once
    moved: list[Alert] = field(default_factory=list)  # only values moved: written in batches
    forgotten: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    applied: dict[str, Finding] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)  # firing alerts hit again by the same finding
    flushed: bool = False  # the values that moved since the last batch write are in `changed`


class AlertTracker:
    def __init__(self, store: AlertStore) -> None:
        self._store = store
        self._alerts: dict[str, Alert] = {a.fingerprint: a for a in store.load_alerts()}
        self._dirty: set[str] = set()  # alerts whose values moved since they were last written
        self._flushed_at = float("-inf")
        # The finding each alert was last built from. A firing alert that never lingers, hit
        # again by the very same Finding object (the rules cache findings of unchanged tokens),
        # changes only its hit count and time: those are kept in `_repeats` (last hit, hits
        # since) and folded into the alert when it next changes or is read with get() —
        # 100,000 open hygiene alerts cost a dict write each per poll, not a new Alert each.
        self._applied: dict[str, Finding] = {}
        self._repeats: dict[str, tuple[float, int]] = {}

    def alerts(self, states: Iterable[AlertState] | None = None) -> list[Alert]:
        """The alerts as last built: a firing alert's hit count and last-hit time may lag its
        repeats (`get` folds them in; the next write does too)."""
        wanted = None if states is None else frozenset(states)
        return [a for a in self._alerts.values() if wanted is None or a.state in wanted]

    def get(self, fingerprint: str) -> Alert | None:
        alert = self._alerts.get(fingerprint)
        return self._folded(alert) if alert is not None and fingerprint in self._repeats else alert

    def evaluate(
        self,
        findings: Iterable[Finding],
        *,
        now: float,
        evaluated_subjects: Subjects | None = None,
        unknown: Subjects | None = None,
    ) -> list[Transition]:
        """Advance every alert by one evaluation and return what changed state.

        `evaluated_subjects` (default: everything) says which alerts this evaluation covers; an
        alert outside it, or inside `unknown` (no data), keeps its state whether or not a finding
        names it. Everything else: a finding is a hit, no finding is "condition cleared".
        """
        plan = _Plan(now)
        drain(self._planning(plan, findings, evaluated_subjects, unknown))
        # Commit before anyone acts on the transitions (crash safety).
        self._store.save_alerts(plan.changed, plan.forgotten)
        return self._adopt(plan)

    async def evaluate_paced(
        self,
        findings: Iterable[Finding],
        *,
        now: float,
        evaluated_subjects: Subjects | None = None,
        unknown: Subjects | None = None,
    ) -> list[Transition]:
        """`evaluate` for the daemon: worked out in slices on the event loop, written from a
        thread; adopted at the end in one step, so readers see the old or the new states, never
        a mix. The caller runs one evaluation at a time."""
        plan = _Plan(now)
        await paced(self._planning(plan, findings, evaluated_subjects, unknown))
        await asyncio.to_thread(self._store.save_alerts, plan.changed, plan.forgotten)
        return self._adopt(plan)

    def _planning(
        self,
        plan: _Plan,
        findings: Iterable[Finding],
        evaluated_subjects: Subjects | None,
        unknown: Subjects | None,
    ) -> Iterator[None]:
        now = plan.now
        covered = subject_predicate(evaluated_subjects, default=True)
        no_data = subject_predicate(unknown, default=False)
        hits: dict[str, Finding] = {}
        for f in findings:
            hits[f.fingerprint] = f
            yield None
        # A snapshot of the keys: between slices the prune job may forget resolved alerts.
        for fp in _chain_keys(hits, list(self._alerts)):
            yield None
            old = self._alerts.get(fp)
            finding = hits.get(fp)
            if old is None and finding is None:
                continue
            if (
                finding is not None
                and unknown is None
                and old is not None
                and old.state == "firing"
                and finding.keep_firing_for == 0
                and self._applied.get(fp) is finding
            ):
                plan.repeated.append(fp)
                continue
            if old is not None and fp in self._repeats:
                old = self._folded(old)
            labels = _labels_with_rule(finding.rule, finding.labels) if finding else _labels_of(old)
            if no_data(labels) or (finding is None and not covered(labels)):
                continue
            new = _step(old, finding, now)
            if new is None:  # a pending alert whose condition cleared: nothing left to remember
                if old is not None:
                    plan.forgotten.append(fp)
                    plan.transitions.append(
                        Transition(replace(old, state="inactive"), old.state, "inactive", now)
                    )
                continue
            if finding is not None:
                plan.applied[fp] = finding
            if old is None or _material(new) != _material(old):
                plan.changed.append(new)
            elif new != old:
                plan.moved.append(new)  # only values moved: kept in memory, written in batches
            before: AlertState = old.state if old is not None else "inactive"
            if new.state != before:
                plan.transitions.append(Transition(new, before, new.state, now))
        plan.transitions.sort(key=lambda t: t.alert.fingerprint)
        if now - self._flushed_at >= VALUE_FLUSH_INTERVAL and (self._dirty or plan.moved):
            # Values that moved since the last write go out with this batch. Repeats do not: they
            # change only the hit count and time of an alert that never lingers (keep_firing_for
            # 0), which nothing reads back; they reach the row with the alert's next change.
            written = {a.fingerprint for a in plan.changed}
            forgotten = set(plan.forgotten)
            latest = {a.fingerprint: a for a in plan.moved}
            for fp in self._dirty:
                yield None
                if fp not in latest and fp not in written and fp not in forgotten and fp in self._alerts:
                    latest[fp] = self._folded(self._alerts[fp])
            plan.changed += [a for fp, a in latest.items() if fp not in written and fp not in forgotten]
            plan.moved = []
            plan.flushed = True

    def _adopt(self, plan: _Plan) -> list[Transition]:
        """Take a written plan: the one step where the tracker's alerts change."""
        now = plan.now
        if plan.flushed:
            self._flushed_at = now
            self._dirty.clear()
        for a in plan.changed:
            self._dirty.discard(a.fingerprint)
            self._repeats.pop(a.fingerprint, None)
        for a in plan.moved:
            self._dirty.add(a.fingerprint)
            self._repeats.pop(a.fingerprint, None)
        for fp in plan.repeated:
            _, n = self._repeats.get(fp, (now, 0))
            self._repeats[fp] = (now, n + 1)
        for fp in plan.forgotten:
            self._dirty.discard(fp)
            self._repeats.pop(fp, None)
            self._applied.pop(fp, None)
            self._alerts.pop(fp, None)
        self._applied.update(plan.applied)
        self._alerts.update((a.fingerprint, a) for a in plan.moved)
        self._alerts.update((a.fingerprint, a) for a in plan.changed)
        return plan.transitions

    def _folded(self, alert: Alert) -> Alert:
        """The alert with its repeated hits counted in (see `_repeats`)."""
        at, n = self._repeats.get(alert.fingerprint, (alert.last_hit_at, 0))
        if n == 0:
            return alert
        return replace(alert, last_eval=at, last_hit_at=at, consecutive_hits=alert.consecutive_hits + n)

    def annotate(self, fingerprint: str, annotations: Mapping[str, str]) -> Alert | None:
        """Attach what a responder did to an open alert (e.g. {"response": "quarantined",
        "quarantined": "true"}); committed before it returns. Keys in STICKY_ANNOTATIONS survive
        re-evaluation until the episode ends; others are replaced by the next finding's."""
        alert = self._alerts.get(fingerprint)
        if alert is None or alert.state not in ("pending", "firing"):
            return None
        updated = replace(alert, annotations={**alert.annotations, **annotations})
        self._store.save_alerts([updated])
        self._alerts[fingerprint] = updated
        return updated

    # --- several instances: each keeps the alerts of the providers it polls ---------------------
    def release(self, providers: Iterable[str]) -> int:
        """Forget (in memory only) the alerts of providers another instance polls now; their rows
        stay for that instance. Alerts without a provider label stay. Returns how many."""
        gone = set(providers)
        dropped = [fp for fp, a in self._alerts.items() if a.labels.get("provider") in gone]
        for fp in dropped:
            self._forget(fp)
        return len(dropped)

    def adopt(self, providers: Iterable[str]) -> int:
        """Take over the providers' alerts as their last owner left them in the database."""
        taken = set(providers)
        self.release(taken)
        loaded = [a for a in self._store.load_alerts() if a.labels.get("provider") in taken]
        self._alerts.update((a.fingerprint, a) for a in loaded)
        return len(loaded)

    def _forget(self, fp: str) -> None:
        self._dirty.discard(fp)
        self._repeats.pop(fp, None)
        self._applied.pop(fp, None)
        self._alerts.pop(fp, None)

    def prune(self, *, before: float) -> int:
        """Forget alerts resolved before `before` (once their resolved notice had its chance)."""
        gone = self._store.prune_resolved(before)
        for fp in gone:
            self._alerts.pop(fp, None)
        return len(gone)


def _chain_keys(first: Mapping[str, object], second: Iterable[str]) -> Iterator[str]:
    """The keys of both, each once, without building their union."""
    yield from first
    for key in second:
        if key not in first:
            yield key


def _material(a: Alert) -> tuple[object, ...]:
    """What must reach the database at once: lifecycle, identity, responder notes. The value,
    summary and evaluation times move every poll and are written every VALUE_FLUSH_INTERVAL."""
    sticky = tuple(sorted((k, v) for k, v in a.annotations.items() if k in STICKY_ANNOTATIONS))
    return (
        a.state,
        a.severity,
        a.active_since,
        a.firing_since,
        a.resolved_at,
        min(a.consecutive_hits, a.for_polls),
        a.for_polls,
        a.keep_firing_for,
        sticky,
    )


def _labels_of(alert: Alert | None) -> Mapping[str, str]:
    assert alert is not None  # a fingerprint comes from a finding or from a known alert
    return _labels_with_rule(alert.rule, alert.labels)


def _labels_with_rule(rule: str, labels: Mapping[str, str]) -> dict[str, str]:
    return {**labels, "rule": rule}


def _step(old: Alert | None, finding: Finding | None, now: float) -> Alert | None:
    """One alert, one evaluation. None means "inactive, forget it"."""
    if finding is None:
        if old is None or old.state in ("inactive", "resolved"):
            return old
        if old.state == "pending":
            return None
        if now - old.last_hit_at < old.keep_firing_for:  # firing, cleared, but kept (no flapping)
            return replace(old, consecutive_hits=0, last_eval=now)
        return replace(old, state="resolved", resolved_at=now, consecutive_hits=0, last_eval=now)

    if old is None or old.state in ("inactive", "resolved"):  # a new episode
        if finding.for_polls <= 1:
            return _from_finding(finding, now, "firing", now, 1, now)
        return _from_finding(finding, now, "pending", None, 1, now)
    sticky = {k: old.annotations[k] for k in STICKY_ANNOTATIONS if k in old.annotations}
    hits = old.consecutive_hits + 1
    if old.state == "firing":
        return _from_finding(finding, now, "firing", old.firing_since, hits, old.active_since, sticky)
    if hits >= finding.for_polls:
        return _from_finding(finding, now, "firing", now, hits, old.active_since, sticky)
    return _from_finding(finding, now, "pending", None, hits, old.active_since, sticky)


def _from_finding(
    f: Finding,
    now: float,
    state: AlertState,
    firing_since: float | None,
    hits: int,
    active_since: float,
    sticky: Mapping[str, str] | None = None,
) -> Alert:
    return Alert(
        fingerprint=f.fingerprint,
        rule=f.rule,
        labels=dict(f.labels),
        severity=f.severity,
        state=state,
        active_since=active_since,
        firing_since=firing_since,
        resolved_at=None,
        last_eval=now,
        last_hit_at=now,
        consecutive_hits=hits,
        value=f.value,
        summary=f.summary,
        annotations={**(sticky or {}), **f.annotations},
        for_polls=f.for_polls,
        keep_firing_for=f.keep_firing_for,
    )
