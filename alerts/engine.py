"""The alert engine as the daemon runs it: after each poll cycle, evaluate the rules on what the
cycle produced, advance alert states, and hand transitions to the notification pipeline.

Built by the composition root (monitor/app.py), which registers `on_cycle` as a poll listener
and `families` as a metrics source; nothing in `monitor` knows this module exists."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from alerts.detection.detectors import Detection, StoredHour, StoredRequest
from alerts.detection.rules import budget_findings, forecast_findings, hygiene_findings, provider_down_finding
from alerts.lifecycle.records import OutboxItem, Transition
from alerts.lifecycle.state import AlertTracker, no_data_for_providers
from alerts.lifecycle.store import OUTCOMES, AlertStore
from alerts.model import Finding
from alerts.notification.notify import Notifier
from alerts.notification.pipeline import NotificationPipeline
from alerts.offline.audit import (
    DIGEST_TAG,
    AuditFinding,
    DigestSchedule,
    audit,
    digest_notify_type,
    render_digest,
)
from alerts.response.leak_reports import LeakReport, Match
from alerts.response.playbook import auto_revoke_paused_finding, leak_playbook
from alerts.response.quarantine import Responder
from monitor.clock import Clock
from monitor.cluster import Ownership
from monitor.metrics import Family
from monitor.model import CAN_DISABLE, RULES, SEVERITIES, severity_rank
from monitor.pacing import drain, paced
from monitor.policy import PolicyBook
from monitor.poller import CycleReport
from monitor.providers.base import Provider
from monitor.settings import Rules, Settings
from monitor.store import UsageReader
from monitor.tokens import TokenState

__all__ = ["AlertEngine", "Pruned"]

log = logging.getLogger("keywatch.alerts")

HISTORY_DAYS = 28  # what the anomaly baselines look back on
_STATELESS_CHUNK = 500  # tokens per batch of the stateless rules between turns of the event loop
# A token's stateless findings as last computed: (state, (hour of its phase, local day), policies,
# rules, findings, its phase in seconds).
_Cached = tuple[TokenState, tuple[int, str], PolicyBook, Rules, tuple[Finding, ...], int]


def _phase(token_id: str) -> int:
    """Where in the hour a token's findings are refreshed: stable across runs (a backtest must
    give the same output every time; Python's str hash is salted per process)."""
    return zlib.crc32(token_id.encode()) % 3600


def _reported_leak(provider: str, token: str, detail: str) -> Finding:
    """The leak_suspected finding an external report raises, while REPORT_ALERT_FOR lasts."""
    return Finding(
        rule="leak_suspected",
        labels={"provider": provider, "token": token},
        severity="security",
        value=1.0,
        summary=f"key leaked: {detail}",
        annotations={"signals": f"external_report: {detail}"},
    )


REPORT_ALERT_FOR = 86400.0  # a reported leak stays an alert this long (the token is revoked meanwhile)
KEEP_FINISHED = 7 * 86400.0  # sent/failed/expired outbox rows and resolved alerts are kept a week


@dataclass(frozen=True, slots=True)
class Pruned:
    outbox: int  # finished notification rows dropped (the counters keep their totals)
    alerts: int  # resolved alerts forgotten
    log: int = 0  # notification-log entries of groups long quiet


class AlertEngine:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Clock,
        notifier: Notifier | None = None,
        providers: Callable[[str], Provider | None] | None = None,
        known_states: Callable[[], Iterable[TokenState]] = tuple,
        offload: bool = True,
        ownership: Ownership | None = None,
    ) -> None:
        """`offload`: share the event loop (paced steps, database writes and muting in worker
        threads), as the daemon must; False runs the same steps straight through, for a caller
        with nothing else on its loop (the backtest's simulated clock). `ownership`: with several
        instances, which providers this one acts for (monitor.cluster); None: all of them."""
        self.settings = settings
        self._offload = offload
        self.clock = clock
        self.store = AlertStore(engine)
        self.store.ensure_schema()
        self.tracker = AlertTracker(self.store)
        self.notifier = notifier or Notifier(settings.notify)
        self.pipeline = NotificationPipeline(
            self.store,
            self.notifier,
            settings,
            clock=clock,
            ownership=ownership,
            sender=ownership.member if ownership is not None and ownership.shared else "",
        )
        self.policies = PolicyBook(settings.tokens, settings.response.protect)
        self._tz = {p.name: ZoneInfo(p.timezone) for p in settings.providers}
        self.responder = Responder(
            engine,
            settings.response,
            clock=clock,
            policies=self.policies,
            providers=providers or (lambda _name: None),
            provider_action=self._provider_action,
            ownership=ownership,
        )
        self._digest = DigestSchedule(engine)
        self.detection = Detection({p.name: p.poll_interval for p in settings.providers})
        self._known_states = known_states
        # Called with every transition and what the responder did about it (backtest, demo).
        self.transition_listeners: list[Callable[[Transition, str], None]] = []
        self._reported: dict[tuple[str, str], tuple[float, str]] = {}
        self._stop = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._evaluating = asyncio.Lock()
        self._stateless: dict[str, dict[str, _Cached]] = {}  # provider -> token id -> findings
        self._ownership = ownership

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._sender = asyncio.create_task(
            self.pipeline.run_sender(self._stop, tick=self._tick), name="notify-sender"
        )

    async def _tick(self) -> None:
        """The group flush (muting, the notification log, the outbox: database work that waits
        whenever a poll is being written) in a worker thread, never beside an evaluation."""
        if not self.pipeline.dispatcher.due(self.clock.now()):
            return
        async with self._evaluating:
            await asyncio.to_thread(self.pipeline.tick)

    async def stop(self) -> None:
        self._stop.set()
        if self._sender is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._sender, timeout=5)

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings
        self.policies = PolicyBook(settings.tokens, settings.response.protect)
        self._tz = {p.name: ZoneInfo(p.timezone) for p in settings.providers}
        self.notifier = Notifier(settings.notify)
        self.pipeline.reconfigure(settings, self.notifier)
        self.responder.reconfigure(settings.response, self.policies)
        self.detection.reconfigure({p.name: p.poll_interval for p in settings.providers})

    # --- several instances: providers move between them (monitor.cluster) ----------------
    def release_providers(self, providers: Iterable[str]) -> None:
        """Another instance polls these now: forget their alerts, histories and findings here."""
        gone = list(providers)
        if not gone:
            return
        n = self.tracker.release(gone)
        for provider in gone:
            self.detection.forget(provider, ())
            self._stateless.pop(provider, None)
        log.info("released %s (%d alerts now the new owner's)", ", ".join(gone), n)

    def adopt_providers(
        self, providers: Iterable[str], states: Iterable[TokenState], reader: UsageReader
    ) -> None:
        """This instance polls these now: their alerts as the last owner left them, and the
        histories of their tokens from the stored rollups."""
        taken = list(providers)
        n = self.tracker.adopt(taken)
        self.pipeline.reload_log()
        self.rebuild_history(states, reader)
        log.info("took over %s (%d alerts)", ", ".join(taken), n)

    # --- the weekly hygiene digest ------------------------------------------------------
    def audit(self, states: Iterable[TokenState]) -> list[AuditFinding]:
        return audit(states, self.settings, self.policies, now=self.clock.now())

    def send_digest_if_due(self, states: Iterable[TokenState]) -> bool:
        """Queue the weekly audit digest (tag `audit`) through the durable outbox when it is due."""
        now = self.clock.now()
        if not self._digest.due(now):
            return False
        findings = self.audit(states)
        title, body = render_digest(findings, now=now)
        if not self.notifier.targets([DIGEST_TAG]):
            log.info("audit digest (no target tagged %r, logged only): %s", DIGEST_TAG, title)
        else:
            item = OutboxItem(
                id=None,
                created_at=now,
                group_key="audit-digest",
                receiver=DIGEST_TAG,
                tags=(DIGEST_TAG,),
                title=title,
                body=body,
                notify_type=digest_notify_type(findings),
                severity="info",  # a week's hygiene report: it may expire, the next one covers it
            )
            self.pipeline.outbox.enqueue(item)
        self._digest.save(now)
        return True

    # --- housekeeping (scheduled by the daemon, monitor.jobs) -----------------------------
    def prune(self, *, keep: float = KEEP_FINISHED) -> Pruned:
        """Drop what no one needs any more: finished outbox rows older than `keep` (pending and
        sending rows stay, however old) alerts resolved more than `keep` ago (their resolved
        notice had its chance; pending and firing alerts stay), and the notification log of
        groups quiet for longer than that."""
        now = self.clock.now()
        outbox, log = self.pipeline.prune(now, keep=keep)
        return Pruned(outbox, self.tracker.prune(before=now - keep), log)

    def _provider_action(self, name: str) -> str | None:
        return next((p.action for p in self.settings.providers if p.name == name), None)

    def _restorable(self, name: str) -> bool:
        """A quarantine on this provider disables the key (so `keywatch restore` can undo it)."""
        kind = next((p.kind for p in self.settings.providers if p.name == name), None)
        action = self._provider_action(name) or self.settings.response.action
        return kind in CAN_DISABLE and action == "disable"

    # --- the per-cycle evaluation -------------------------------------------------------
    async def on_cycle(self, report: CycleReport) -> None:
        """One evaluation at a time (providers poll independently); the work over every token and
        every alert runs in slices that give the event loop a turn (monitor.pacing)."""
        async with self._evaluating:
            await self._on_cycle(report)

    async def _on_cycle(self, report: CycleReport) -> None:
        provider = report.provider
        if self._ownership is not None and not self._ownership.owns(provider):
            return  # lost between the poll's write and now: the new owner evaluates it
        now = self.clock.now()
        if report.ok and report.cycle is not None:
            self.detection.observe(provider, report.cycle)
            findings: list[Finding] = []
            evaluation = self._token_evaluation(provider, report.states.values(), now, findings)
            await paced(evaluation) if self._offload else drain(evaluation)
            unknown = None
        else:
            down = provider_down_finding(provider, report.failures, report.error_reason, self.settings.rules)
            findings = [down] if down else []
            # No data is not "all fine": the provider's token alerts neither fire nor resolve.
            unknown = no_data_for_providers({provider})
        if self.responder.settings.auto_revoke and self.responder.paused():
            findings.append(auto_revoke_paused_finding(provider, self.responder.settings.max_per_hour))
        covered = [{"provider": provider}]
        if self._offload:
            transitions = await self.tracker.evaluate_paced(
                findings, now=now, evaluated_subjects=covered, unknown=unknown
            )
        else:
            transitions = self.tracker.evaluate(
                findings, now=now, evaluated_subjects=covered, unknown=unknown
            )
        await self.responder.resume()
        if report.ok:
            await self._respond(provider, report, now)
        for t in transitions:
            action = self._action(t)
            for listener in self.transition_listeners:
                listener(t, action)
            a = t.alert
            log.info(
                "alert %s %s -> %s: %s",
                a.rule,
                t.from_state,
                t.to_state,
                a.summary,
                extra={"rule": a.rule, "provider": a.labels.get("provider"), "token": a.labels.get("token")},
            )
        if self._offload:
            await self.pipeline.process_paced(transitions, self.tracker.alerts(), now=now)
        else:
            self.pipeline.process(transitions, self.tracker.alerts(), now=now)

    def _action(self, t: Transition) -> str:
        """What the responder did about a transition: quarantine, dry_run or none (backtest output)."""
        if t.alert.rule != "leak_suspected" or t.to_state != "firing":
            return "none"
        current = self.tracker.get(t.alert.fingerprint)
        response = current.annotations.get("response", "") if current else ""
        if response.startswith("quarantined"):
            return "quarantine"
        return "dry_run" if response.startswith("dry run") else "none"

    async def _respond(self, provider: str, report: CycleReport, now: float) -> None:
        """Hand every firing leak alert of this provider to the responder (it acts once per
        episode), and write what it did onto the alert for the notification."""
        ids = {s.series: s.token_id for s in report.states.values()}
        for alert in self.tracker.alerts(["firing"]):
            if alert.rule != "leak_suspected" or alert.labels.get("provider") != provider:
                continue
            token = alert.labels.get("token", "")
            token_id = ids.get(token)
            if token_id is None:
                continue
            decision = await self.responder.on_leak(
                provider=provider,
                token_id=token_id,
                token=token,
                episode=f"{alert.fingerprint}@{alert.active_since:.0f}",
                reason=alert.summary,
                complete_poll=report.complete,
            )
            notes = {
                "response": decision.response,
                "next_steps": leak_playbook(token, decision, restorable=self._restorable(provider)),
            }
            if decision.quarantined:
                notes["quarantined"] = "true"
            if any(alert.annotations.get(k) != v for k, v in notes.items()):
                self.tracker.annotate(alert.fingerprint, notes)

    # --- external leak reports ----------------------------------------------------------
    def find_by_key_hash(self, digest: str) -> list[Match]:
        return [Match(s.provider, s.token_id, s.name) for s in self._states_by_hash().get(digest, [])]

    async def act_on_report(self, match: Match, report: LeakReport) -> str:
        """An external report is enough alone: quarantine now (protected tokens only alert), and
        keep a leak_suspected finding up for the token so people are told through the pipeline."""
        where = report.url or report.source or "an external scanner"
        self._reported[(match.provider, match.name)] = (
            self.clock.now(),
            f"reported by {where} ({report.type})",
        )
        decision = await self.responder.manual(
            provider=match.provider,
            token_id=match.token_id,
            token=match.name,
            reason=f"leak report: {where}",
            mode="report",
        )
        return decision.response

    def _report_findings(self, provider: str, now: float) -> Iterable[Finding]:
        told: set[str] = set()
        for (prov, token), (at, detail) in list(self._reported.items()):
            if now - at > REPORT_ALERT_FOR:
                del self._reported[(prov, token)]
                continue
            if prov == provider:
                told.add(token)
                yield _reported_leak(provider, token, detail)
        if self._ownership is not None and self._ownership.shared:
            # Reports that reached another instance: recorded in the database, raised here.
            for token, reason, _at in self.responder.recent_reports(provider, now - REPORT_ALERT_FOR):
                if token in told:
                    continue
                told.add(token)
                yield _reported_leak(provider, token, reason)

    def _states_by_hash(self) -> dict[str, list[TokenState]]:
        index: dict[str, list[TokenState]] = {}
        for s in self._known_states():
            if s.key_sha256:
                index.setdefault(s.key_sha256, []).append(s)
        return index

    def token_findings(self, provider: str, states: Iterable[TokenState], *, now: float) -> list[Finding]:
        found: list[Finding] = []
        drain(self._token_evaluation(provider, states, now, found))
        return found

    def _token_evaluation(
        self, provider: str, states: Iterable[TokenState], now: float, into: list[Finding]
    ) -> Iterator[None]:
        """Every rule on every token of the provider, into `into`; yields between tokens."""
        states = list(states)
        yield from self._stateless_evaluation(provider, states, now, into)
        yield from self.detection.evaluation(
            provider, states, self.policies, self.settings.rules, now=now, into=into
        )
        into.extend(self._report_findings(provider, now))

    def _stateless_evaluation(
        self, provider: str, states: list[TokenState], now: float, into: list[Finding]
    ) -> Iterator[None]:
        """budget, budget_forecast, token_expiring, token_unused and rotation_due: functions of a
        token's state, the policies, the rules and the clock. A token whose state object, policies
        and rules are the ones of last time, in the same local day and the same hour of its own
        phase, gets last time's Finding objects back: an idle fleet costs an identity check per
        token, the alert tracker recognises the very same findings cheaply, and the hourly
        refresh of values (days to expiry, the forecast) is spread over the hour by token, not
        done for the whole fleet at once. The whole fleet is evaluated again at local midnight
        (budget periods) and on reload."""
        tz = self._tz.get(provider, ZoneInfo("UTC"))
        rules, policies = self.settings.rules, self.policies
        day = datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d")
        cache = self._stateless.get(provider, {})
        fresh: dict[str, _Cached] = {}
        stale: list[tuple[TokenState, tuple[int, str], int]] = []
        for s in states:
            yield None
            hit = cache.get(s.token_id)
            phase = hit[5] if hit is not None else _phase(s.token_id)
            stamp = (int((now + phase) // 3600), day)
            if hit is not None and hit[0] is s and hit[1] == stamp and hit[2] is policies and hit[3] is rules:
                fresh[s.token_id] = hit
                into.extend(hit[4])
            else:
                stale.append((s, stamp, phase))
        for i in range(0, len(stale), _STATELESS_CHUNK):
            yield None
            chunk = stale[i : i + _STATELESS_CHUNK]
            batch = [s for s, _, _ in chunk]
            by_token: dict[str, list[Finding]] = {}
            for f in chain(
                budget_findings(batch, policies, rules, now=now, tz=tz),
                forecast_findings(batch, policies, rules, now=now, tz=tz),
                hygiene_findings(batch, rules, now=now),
            ):
                by_token.setdefault(f.labels["token"], []).append(f)
            for s, stamp, phase in chunk:
                found = tuple(by_token.get(s.series, ()))
                fresh[s.token_id] = (s, stamp, policies, rules, found, phase)
                into.extend(found)
        self._stateless[provider] = fresh  # tokens gone from the fleet leave the cache here

    def rebuild_history(self, states: Iterable[TokenState], reader: UsageReader) -> int:
        """At start: the detectors' per-token histories from the stored rollups and request log."""
        now = self.clock.now()
        hours = (StoredHour(*row) for row in reader.hourly_since(now - HISTORY_DAYS * 86400))
        requests = (
            StoredRequest(p, t, ts, model or None, ip, n, cost)
            for p, t, ts, model, ip, n, cost in reader.requests_since(now - 14 * 86400)
        )
        return self.detection.rebuild(states, hours, requests)

    def scores(self) -> Mapping[tuple[str, str], float]:
        return self.detection.scores

    # --- reads --------------------------------------------------------------------------
    def firing_counts(self) -> Mapping[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {(rule, sev): 0 for rule in RULES for sev in SEVERITIES}
        for alert in self.tracker.alerts(["firing"]):
            key = (alert.rule, alert.severity)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def families(self) -> list[Family]:
        firing = [
            ({"rule": r, "severity": s}, float(n)) for (r, s), n in sorted(self.firing_counts().items())
        ]
        # Counted from the shared database: with several instances, the notification families
        # come from the leader alone and the per-provider ones from each provider's owner, so
        # that sums over every scraped instance count each event once.
        shared = self._ownership is not None and self._ownership.shared
        fleet_wide = not shared or (self._ownership is not None and self._ownership.leader())
        counts = self.pipeline.counts() if fleet_wide else {}
        notifications = [({"outcome": o}, float(counts.get(o, 0))) for o in OUTCOMES] if fleet_wide else []
        backlog = self.pipeline.backlog(self.clock.now()) if fleet_wide else None
        pending = [({"severity": s}, float(n)) for s, n in backlog.by_severity.items()] if backlog else []
        oldest: list[tuple[dict[str, str], float]] = [({}, backlog.oldest_age)] if backlog else []
        revocations = []
        done = self.responder.counts()
        paused = self.responder.settings.auto_revoke and self.responder.paused()
        providers = sorted({p.name for p in self.settings.providers} | {k[0] for k in done})
        if shared and self._ownership is not None:
            providers = [p for p in providers if self._ownership.owns(p)]
        for provider in providers:
            for mode in ("auto", "manual", "report", "restore"):
                for outcome in ("done", "dry_run", "failed", "blocked"):
                    n = done.get((provider, mode, outcome), 0)
                    revocations.append(({"provider": provider, "mode": mode, "outcome": outcome}, float(n)))
        return [
            Family(
                "keywatch_revocations_total",
                "counter",
                "Quarantine attempts by provider, mode (auto, manual, report) and outcome.",
                revocations,
            ),
            Family(
                "keywatch_auto_revoke_paused",
                "gauge",
                "1 while automatic quarantine is paused by response.max_per_hour.",
                [({"provider": p}, float(paused)) for p in providers],
            ),
            Family("keywatch_alerts_firing", "gauge", "Alerts firing now, by rule and severity.", firing),
            Family(
                "keywatch_notifications_total",
                "counter",
                "Notifications by outcome (sent; failed: no target has the tags; expired: an info or "
                "warning notice undelivered for a day; suppressed by a silence or inhibition).",
                notifications,
            ),
            Family(
                "keywatch_notifications_pending",
                "gauge",
                "Notifications not delivered yet (pending or being sent), by severity.",
                pending,
            ),
            Family(
                "keywatch_notification_oldest_pending_seconds",
                "gauge",
                "Age of the oldest notification not delivered yet; 0 when none waits.",
                oldest,
            ),
        ]

    def api_alerts(self) -> list[dict[str, object]]:
        """Pending and firing alerts, most severe first (`keywatch alerts`, GET /api/v1/alerts)."""
        active = [a for a in self.tracker.alerts(["pending", "firing"])]
        active.sort(key=lambda a: (-severity_rank(a.severity), a.state != "firing", a.rule, a.fingerprint))
        return [a.to_api() for a in active]
