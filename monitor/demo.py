"""`keywatch demo`: the simulator and the daemon in one process, telling a story on the console.

No config, no network: a simulated relay on loopback with two dozen tokens, 14 days of seeded
history, and the daemon polling it every two seconds on a shared clock that runs 60x faster than
the wall clock (so a two-minute demo covers two hours of traffic). A quarter of the way in a dev
token blows through its daily budget; a little later a dormant token's key leaks and someone
starts spending 20x its old rate from addresses never seen before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from monitor.app import Daemon
from monitor.poller import CycleReport
from monitor.providers.simulator import Archetype, SimulatedRelay, make_relay, serve
from monitor.secret import Secret
from monitor.settings import Budget, ProviderSettings, Response, Settings, TokenPolicy

__all__ = ["run_demo"]

SPEED = 60.0  # simulated seconds per real second
POLL_EVERY = 2.0  # real seconds
HISTORY_DAYS = 14
DEV_DAILY_BUDGET = 5.0

log = logging.getLogger("keywatch.demo")


def run_demo(*, duration: float, listen: str, data_dir: str | None) -> int:
    logging.getLogger("keywatch").setLevel(logging.WARNING)  # the story, not the log, is the output
    try:
        return asyncio.run(_demo(duration, listen, data_dir))
    except OSError as exc:
        print(f"keywatch demo: cannot start: {exc}")
        return 1


def _say(relay: SimulatedRelay, text: str) -> None:
    clock = datetime.fromtimestamp(relay.now(), UTC).strftime("%a %H:%M")
    print(f"[{clock}] {text}", flush=True)


async def _demo(duration: float, listen: str, data_dir: str | None) -> int:
    workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="keywatch-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    relay = make_relay(tokens=24, seed=7, speed=SPEED)
    sim = await serve(relay, "127.0.0.1", 0)
    # A daily budget that no dev token has reached yet, so the crossing the story stages is news.
    dev_today = [t.today_usage for t in relay.list_tokens() if t.name.startswith("dev-")]
    dev_daily = float(max(DEV_DAILY_BUDGET, round(max(dev_today, default=0.0) * 1.5 + 1)))
    settings = Settings(
        database=f"sqlite:///{workdir / 'keywatch.db'}",
        listen=listen,
        providers=(
            ProviderSettings(
                name="demo",
                kind="laozhang",
                base_url=sim.url,
                admin_token=Secret(relay.admin_token),
                poll_interval=POLL_EVERY,
                timeout=5.0,
            ),
        ),
        tokens=(
            TokenPolicy(match="prod-*", budget=Budget(monthly_usd=2000.0), protected=True),
            TokenPolicy(match="dev-*", budget=Budget(daily_usd=dev_daily, monthly_usd=150.0)),
        ),
        response=Response(auto_revoke=True, protect=("prod-*",)),
    )
    print("keywatch demo — a simulated relay, the daemon, and a story. Ctrl-C ends it early.")
    print(f"  relay simulator : {sim.url} ({len(relay.list_tokens())} tokens, time runs {SPEED:g}x)")
    print(f"  database        : {workdir / 'keywatch.db'}")
    daemon = Daemon(settings, clock=relay)
    story = Story(relay, daemon, duration or 120.0, dev_daily)
    try:
        await daemon.prime()
        seeded = _seed_history(relay, daemon)
        _say(relay, f"seeded {seeded:,} hourly usage rows: {HISTORY_DAYS} days of history for every token")
        for poller in daemon.pollers.values():
            poller.listeners.append(story.on_cycle)
        await daemon.start()
        print(f"  metrics         : http://{listen}/metrics   tokens: http://{listen}/api/v1/tokens")
        print()
        await story.play(duration)
    finally:
        await daemon.stop()
        await sim.close()
    _write_config(workdir, settings, dev_daily)
    story.summary(workdir)
    return 0


def _seed_history(relay: SimulatedRelay, daemon: Daemon) -> int:
    now = relay.now()
    pks = {s.token_id: s.pk for p in daemon.pollers.values() for s in p.states.values() if s.pk is not None}
    rows = relay.history(now - HISTORY_DAYS * 86400, now - 3600, step=3600)
    points = [(pks[r.token_id], r.ts, r.cost_usd, r.requests) for r in rows if r.token_id in pks]
    return daemon.writer.write_history(points)


class Story:
    """Plays the incidents on schedule and narrates each poll."""

    def __init__(self, relay: SimulatedRelay, daemon: Daemon, length: float, dev_daily: float) -> None:
        self.relay = relay
        self.dev_daily = dev_daily
        self.daemon = daemon
        self.length = length
        self.polls = 0
        self.spend = 0.0
        self.over_budget: set[str] = set()
        tokens = relay.list_tokens()
        busy_dev = [
            t
            for t in tokens
            if t.name.startswith("dev-") and t.archetype in (Archetype.SERVICE, Archetype.BUSINESS)
        ]
        dormant = [t for t in tokens if t.archetype == Archetype.DORMANT]
        self.budget_victim = max(busy_dev, key=lambda t: t.usd_per_hour).name if busy_dev else None
        dormant.sort(key=lambda t: not t.name.startswith("dev-"))  # a dev token, where there is one
        self.leak_victim = dormant[0].name if dormant else None

    async def play(self, duration: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        start = time.monotonic()
        acts = [(0.2, self._budget_act), (0.45, self._leak_act)]
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

    def _budget_act(self) -> None:
        if self.budget_victim:
            added = self.relay.push_over_budget(self.budget_victim, "day", target_usd=self.dev_daily)
            _say(self.relay, f"▶ incident: {self.budget_victim} runs a big job: +${added:,.2f} in minutes")

    def _leak_act(self) -> None:
        if self.leak_victim:
            self.relay.start_leak(self.leak_victim, multiplier=20)
            _say(
                self.relay,
                f"▶ incident: the key of dormant {self.leak_victim} leaks; someone starts spending with it",
            )

    async def on_cycle(self, report: CycleReport) -> None:
        self.polls += 1
        if not report.ok or report.cycle is None:
            _say(self.relay, f"poll of {report.provider} failed: {report.error_reason}")
            return
        spend = report.cycle.spend
        total = sum(s.cost_usd for s in spend)
        self.spend += total
        states = report.states
        top = sorted(spend, key=lambda s: s.cost_usd, reverse=True)[:3]
        tops = ", ".join(f"{states[s.token_id].name} ${s.cost_usd:.2f}" for s in top)
        _say(self.relay, f"poll {self.polls:3d}: {report.cycle.seen} tokens, +${total:7.2f}  {tops}")
        for state in states.values():
            budgets = self.daemon.policies.budgets(state)
            today = state.mark.today_usd if state.mark else None
            if (
                budgets.day
                and today is not None
                and today >= budgets.day
                and state.name not in self.over_budget
            ):
                self.over_budget.add(state.name)
                _say(
                    self.relay,
                    f"  ! {state.name} is over its daily budget: ${today:.2f} of ${budgets.day:.2f}",
                )

    def summary(self, workdir: Path) -> None:
        print()
        print("summary")
        print(f"  polls           : {self.polls}")
        print(f"  spend observed  : ${self.spend:,.2f}")
        print(f"  over budget     : {', '.join(sorted(self.over_budget)) or 'none'}")
        config = workdir / "keywatch.yaml"
        print(f"  history kept in : {workdir / 'keywatch.db'}")
        print(f"  look around     : keywatch -c {config} tokens")
        if self.leak_victim:
            print(f"                    keywatch -c {config} history {self.leak_victim} --since 3h")


def _write_config(workdir: Path, settings: Settings, dev_daily: float) -> None:
    """A config next to the demo database, so the CLI's read commands work on what the demo saw."""
    provider = settings.providers[0]
    (workdir / "keywatch.yaml").write_text(
        f"# written by `keywatch demo`: the simulator it points at is gone, the history stays\n"
        f"database: {settings.database}\n"
        f"providers:\n"
        f"  - name: {provider.name}\n"
        f"    kind: laozhang\n"
        f"    base_url: {provider.base_url}\n"
        f"    admin_token: {provider.admin_token.reveal()}  # the simulator's fixture token\n"
        f"tokens:\n"
        f"  - match: 'prod-*'\n    budget: {{monthly_usd: 2000}}\n    protected: true\n"
        f"  - match: 'dev-*'\n    budget: {{daily_usd: {dev_daily:g}, monthly_usd: 150}}\n"
    )
