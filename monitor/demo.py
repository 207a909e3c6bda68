"""`keywatch demo`: the simulator and the daemon in one process, telling a story on the console.

No config, no network: a simulated new-api relay on loopback (request logs with client IPs on)
with two dozen tokens and 14 days of seeded history, and the daemon polling it every two seconds
on a shared clock that runs 60x faster than the wall clock, starting late in the evening so the
relay's day rolls over during the demo. The story, at fractions of the run:

- 6 %: a busy token spends 8x its usual rate for half an hour, from its usual clients: a spend
  anomaly, not a leak; it resolves once the rate is back to normal.
- 20 %: a dev token's batch job blows through its daily budget; the alert resolves at midnight,
  when the budget period rolls over.
- 45 %: the key of a dormant token leaks: someone spends 20x from addresses never seen
  before, on expensive models. keywatch quarantines it within two polls and says what to do.

Notifications are printed the way a chat target would receive them; the hygiene audit closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from monitor.app import Daemon
from monitor.model import RequestRecord
from monitor.poller import CycleReport
from monitor.secret import Secret
from monitor.settings import AnomalyRule, Budget, ProviderSettings, Response, Rules, Settings, TokenPolicy
from monitor.simulator import Archetype, SimToken, SimulatedRelay, make_relay, serve

__all__ = ["run_demo"]

SPEED = 60.0  # simulated seconds per real second
POLL_EVERY = 2.0  # real seconds
HISTORY_DAYS = 14
TOKENS = 24

log = logging.getLogger("keywatch.demo")


def run_demo(*, duration: float, listen: str, data_dir: str | None) -> int:
    logging.getLogger().setLevel(logging.WARNING)  # the story, not the log, is the output
    for name in ("alerts", "keywatch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return asyncio.run(_demo(duration, listen, data_dir))
    except OSError as exc:
        print(f"keywatch demo: cannot start: {exc}")
        return 1


def _late_evening() -> float:
    """Today (UTC) at 22:55, so midnight comes ~65 s into the demo."""
    now = datetime.now(UTC)
    return now.replace(hour=22, minute=55, second=0, microsecond=0).timestamp()


async def _demo(duration: float, listen: str, data_dir: str | None) -> int:
    workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="keywatch-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    relay = make_relay(tokens=TOKENS, seed=7, speed=SPEED, start=_late_evening(), step=20.0)
    sim = await serve(relay, "127.0.0.1", 0, flavor="newapi")
    cast = Cast.choose(relay)
    settings = _settings(relay, sim.url, workdir, listen, cast)
    print(f"keywatch demo — the console: http://{listen}/ (open it in a browser while the story runs)")
    print("  a simulated relay, the daemon, and a story. Ctrl-C ends it early.")
    print(f"  relay simulator : {sim.url} (new-api, {len(relay.list_tokens())} tokens, time runs {SPEED:g}x)")
    print(f"  database        : {workdir / 'keywatch.db'}")
    daemon = Daemon(settings, clock=relay)
    story = Story(relay, daemon, duration or 120.0, cast)
    daemon.alerts.pipeline.listeners.append(story.on_notification)
    try:
        await daemon.prime()
        seeded = _seed_history(relay, daemon)
        _say(
            relay,
            f"seeded {HISTORY_DAYS} days of history: {seeded:,} hourly rows, with each token's usual clients",
        )
        for poller in daemon.pollers.values():
            poller.listeners.append(story.on_cycle)
        await daemon.start()
        print(f"  metrics         : http://{listen}/metrics   alerts: http://{listen}/api/v1/alerts")
        print()
        await story.play(duration)
    finally:
        await daemon.stop()
        await sim.close()
    _write_config(workdir, settings)
    story.summary(workdir, daemon)
    return 0


class Cast:
    """Which simulated tokens play which part."""

    def __init__(
        self, spiky: SimToken | None, batch: SimToken | None, leaked: SimToken | None, daily: float
    ) -> None:
        self.spiky, self.batch, self.leaked, self.daily = spiky, batch, leaked, daily

    @classmethod
    def choose(cls, relay: SimulatedRelay) -> Cast:
        tokens = relay.list_tokens()
        busy = sorted(
            (
                t
                for t in tokens
                if t.archetype in (Archetype.SERVICE, Archetype.BUSINESS) and not t.name.startswith("prod-")
            ),
            key=lambda t: -t.usd_per_hour,
        )
        dormant = sorted(
            (t for t in tokens if t.archetype == Archetype.DORMANT),
            key=lambda t: not t.name.startswith("dev-"),
        )
        batch = next((t for t in busy if t.name.startswith("dev-")), busy[0] if busy else None)
        spiky = next((t for t in busy if t is not batch), None)
        # A daily budget no dev token has reached yet, so the crossing the story stages is news.
        today = max((t.today_usage for t in tokens if t.name.startswith("dev-")), default=0.0)
        return cls(spiky, batch, dormant[0] if dormant else None, float(max(10, round(today * 1.5 + 5))))


def _settings(relay: SimulatedRelay, url: str, workdir: Path, listen: str, cast: Cast) -> Settings:
    month = max((t.month_usage for t in relay.list_tokens()), default=0.0)
    roomy = float(round(month * 2 + 100))  # monthly budgets nobody crosses during the demo
    return Settings(
        database=f"sqlite:///{workdir / 'keywatch.db'}",
        listen=listen,
        providers=(
            ProviderSettings(
                name="demo",
                kind="newapi",
                base_url=url,
                admin_token=Secret(relay.admin_token),
                user_id=1,
                reveal_keys=True,
                poll_interval=POLL_EVERY,
                timeout=5.0,
            ),
        ),
        tokens=(
            TokenPolicy(match="prod-*", budget=Budget(monthly_usd=roomy), protected=True),
            TokenPolicy(match="dev-*", budget=Budget(daily_usd=cast.daily, monthly_usd=roomy)),
            TokenPolicy(match="*", budget=Budget(monthly_usd=roomy)),
        ),
        response=Response(auto_revoke=True, protect=("prod-*",)),
        # The demo's hour lasts a minute: let an anomaly resolve within the run.
        rules=Rules(anomaly=AnomalyRule(keep_firing_for=600.0)),
    )


def _seed_history(relay: SimulatedRelay, daemon: Daemon) -> int:
    """14 days of hourly usage, plus a daily log row per token from its usual clients and models,
    as if keywatch had been watching all along."""
    now = relay.now()
    since = now - HISTORY_DAYS * 86400
    states = {s.token_id: s for p in daemon.pollers.values() for s in p.states.values()}
    by_name = {s.name: s for s in states.values() if s.pk is not None}  # wire ids differ by flavour
    rows = list(relay.history(since, now - 3600, step=3600))
    points = [(by_name[r.name].pk or 0, r.ts, r.cost_usd, r.requests) for r in rows if r.name in by_name]
    records = []
    for tok in relay.list_tokens():
        state = by_name.get(tok.name)
        if state is None or tok.archetype in (Archetype.IDLE, Archetype.DORMANT):
            continue
        for day in range(HISTORY_DAYS):
            ts = since + (day + 1) * 86400 - 1800  # the last day's rows just before now: no log backlog
            for i, ip in enumerate(tok.ips):
                model = tok.models[i % len(tok.models)]
                records.append(
                    RequestRecord(
                        state.token_id, tok.name, ts, model, ip, 0, 0, 0.0, None, f"seed-{day}-{i}", 1
                    )
                )
            for i, model in enumerate(tok.models):
                records.append(
                    RequestRecord(
                        state.token_id,
                        tok.name,
                        ts,
                        model,
                        tok.ips[0],
                        0,
                        0,
                        0.0,
                        None,
                        f"seed-{day}-m{i}",
                        1,
                    )
                )
    writer = daemon.writer
    written = writer.write_history(points, records=records, states=states, watched_since=since)
    for name, poller in daemon.pollers.items():
        poller.states = daemon.reader.token_states(name).get(name, {})
    return written


def _say(relay: SimulatedRelay, text: str) -> None:
    clock = datetime.fromtimestamp(relay.now(), UTC).strftime("%a %H:%M")
    print(f"[{clock}] {text}", flush=True)


_SEVERE = re.compile(r"\[(warning|critical|security)\]")


class Story:
    """Plays the incidents on schedule and narrates polls and notifications."""

    def __init__(self, relay: SimulatedRelay, daemon: Daemon, length: float, cast: Cast) -> None:
        self.relay, self.daemon, self.length, self.cast = relay, daemon, length, cast
        self.polls = 0
        self.spend = 0.0
        self.sent: Counter[str] = Counter()
        self.hygiene = 0
        self.leak_poll: int | None = None
        self.leak_due = False
        self.quarantined_after: int | None = None

    async def play(self, duration: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        start = time.monotonic()
        acts: list[tuple[float, Callable[[], None]]] = [
            (0.06, self._spike_starts),
            (0.20, self._budget_act),
            (0.32, self._spike_ends),
            (0.45, self._leak_act),
        ]
        while not stop.is_set():
            elapsed = time.monotonic() - start
            while acts and elapsed >= acts[0][0] * self.length:
                acts.pop(0)[1]()
            if duration and elapsed >= duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    # --- the incidents ------------------------------------------------------------------------
    def _spike_starts(self) -> None:
        tok = self.cast.spiky
        if tok:
            self.relay.start_leak(tok.id, multiplier=8, new_ips=False, models=tok.models)
            _say(self.relay, f"▶ incident: {tok.name} spends 8x its usual rate, from its usual clients")

    def _spike_ends(self) -> None:
        if self.cast.spiky:
            self.relay.stop_leak(self.cast.spiky.id)
            _say(self.relay, f"▶ incident over: {self.cast.spiky.name} is back to normal")

    def _budget_act(self) -> None:
        tok = self.cast.batch
        if tok:
            added = self.relay.push_over_budget(tok.id, "day", target_usd=self.cast.daily)
            _say(
                self.relay,
                f"▶ incident: {tok.name} runs a big batch job: +${added:,.2f} (daily budget ${self.cast.daily:g})",
            )

    def _leak_act(self) -> None:
        self.leak_due = True  # started right after the next poll, so "polls since" is exact

    def _start_leak(self) -> None:
        self.leak_due = False
        tok = self.cast.leaked
        if tok:
            self.relay.start_leak(tok.id, multiplier=20)
            self.leak_poll = self.polls
            _say(
                self.relay,
                f"▶ incident: the key of dormant {tok.name} leaks; strangers start spending with it",
            )

    # --- narration ----------------------------------------------------------------------------
    async def on_cycle(self, report: CycleReport) -> None:
        self.polls += 1
        if self.leak_poll is not None and self.quarantined_after is None and self._quarantined():
            self.quarantined_after = self.polls - self.leak_poll  # polls that ran since the leak began
        if self.leak_due:
            self._start_leak()
        if not report.ok or report.cycle is None:
            _say(self.relay, f"poll of {report.provider} failed: {report.error_reason}")
            return
        spend = report.cycle.spend
        total = sum(s.cost_usd for s in spend)
        self.spend += total
        top = sorted(spend, key=lambda s: s.cost_usd, reverse=True)[:2]
        tops = ", ".join(f"{report.states[s.token_id].name} ${s.cost_usd:.2f}" for s in top)
        if self.polls % 3 == 0 or total > 2:
            _say(self.relay, f"poll {self.polls:3d}: {report.cycle.seen} tokens, +${total:6.2f}  {tops}")

    def _quarantined(self) -> bool:
        name = self.cast.leaked.name if self.cast.leaked else None
        rows = self.daemon.alerts.responder.history(limit=20)
        return any(r["token"] == name and r["state"] in ("done", "pending_verification") for r in rows)

    def on_notification(self, sent: object) -> None:
        title, body = str(getattr(sent, "title", "")), str(getattr(sent, "body", ""))
        for rule in re.findall(r"\* (\w+) \[", body):
            self.sent[rule] += 1
        if not _SEVERE.search(body) and "[RESOLVED" not in title:
            self.hygiene += 1  # info-level hygiene notices: the audit at the end lists them
            return
        _say(self.relay, f"🔔 {title}")
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith(("Sent because", "value:", "Firing (", "Resolved (")):
                continue
            print(f"            {line}")

    def summary(self, workdir: Path, daemon: Daemon) -> None:
        print()
        print("summary")
        print(f"  polls            : {self.polls}, spend observed ${self.spend:,.2f}")
        sent = ", ".join(f"{rule} {n}" for rule, n in self.sent.most_common()) or "none"
        print(f"  alerts notified  : {sent}")
        if self.cast.leaked:
            when = (
                f"{self.quarantined_after} poll(s) after the leak began"
                if self.quarantined_after
                else "not yet"
            )
            print(f"  quarantined      : {self.cast.leaked.name}, {when}")
        states = [s for p in daemon.pollers.values() for s in p.states.values()]
        findings = daemon.alerts.audit(states)
        print(
            f"  hygiene audit    : {len(findings)} findings ({self.hygiene} hygiene notices were sent as info)"
        )
        for finding in findings[:6]:
            print(f"    {finding.finding:<22} {finding.token:<32} {finding.detail}")
        if len(findings) > 6:
            print(f"    ... and {len(findings) - 6} more")
        config = workdir / "keywatch.yaml"
        print(f"  look around      : keywatch -c {config} tokens | alerts | audit")
        if self.cast.leaked:
            print(f"                     keywatch -c {config} history {self.cast.leaked.name} --since 3h")


def _write_config(workdir: Path, settings: Settings) -> None:
    """A config next to the demo database, so the CLI's read commands work on what the demo saw."""
    provider = settings.providers[0]
    policies = "".join(
        f"  - match: '{p.match}'\n    budget: {{daily_usd: {p.budget.daily_usd}, monthly_usd: {p.budget.monthly_usd}}}\n"
        + ("    protected: true\n" if p.protected else "")
        for p in settings.tokens
    ).replace("daily_usd: None, ", "")
    (workdir / "keywatch.yaml").write_text(
        "# written by `keywatch demo`: the simulator it points at is gone, the history stays\n"
        f"database: {settings.database}\n"
        "providers:\n"
        f"  - name: {provider.name}\n"
        f"    kind: {provider.kind}\n"
        f"    base_url: {provider.base_url}\n"
        f"    admin_token: {provider.admin_token.reveal()}  # the simulator's fixture token\n"
        f"    user_id: {provider.user_id}\n"
        f"tokens:\n{policies}"
    )
