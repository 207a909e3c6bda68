"""The composition root: builds the daemon from Settings, and the only place where `monitor`
and `alerts` meet. Owns the event loop's long-lived parts: store, pollers, scheduler, HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from alerts import api as alerts_api
from alerts import cli as alerts_cli
from alerts.engine import AlertEngine
from alerts.response import leak_reports
from console import routes as console_routes
from console.source import DaemonConsoleData
from monitor import __version__
from monitor.clock import Clock, SystemClock
from monitor.cluster import Beat, Cluster, Solo, default_instance_name
from monitor.cluster import families as cluster_families
from monitor.config import ConfigError
from monitor.gcpolicy import GcPolicy
from monitor.jobs import (
    AUDIT_DIGEST_CHECK,
    HOUSEKEEPING_DELAY,
    NOTIFICATION_PRUNE,
    RETENTION,
    Every,
    Job,
    Schedule,
)
from monitor.looplag import LoopLag
from monitor.metrics import Exposition, ProviderHealth
from monitor.model import CAN_DISABLE
from monitor.policy import PolicyBook
from monitor.poller import CycleListener, CycleReport, Poller
from monitor.providers.base import Provider
from monitor.providers.http import make_client
from monitor.providers.registry import build_provider
from monitor.redact import Redactor
from monitor.server import EmbeddedServer, bind, build_app, exposure_warnings, make_server
from monitor.settings import ProviderSettings, Settings
from monitor.store import UsageReader, UsageWriter, describe_fault, open_engine, prune
from monitor.store.dialect import is_postgres
from monitor.tokens import TokenState
from monitor.views import TokenRowCache

__all__ = ["Daemon", "command_handlers"]

log = logging.getLogger("keywatch.daemon")


class Daemon:
    """keywatch run: poll every provider on its interval, keep the history, serve /metrics."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, manage_gc: bool = False) -> None:
        """`manage_gc`: no automatic full collections, one a day (monitor.gcpolicy); for the
        process that is the daemon (`keywatch run`), not for one that embeds it (tests)."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine: Engine = open_engine(settings.database)
        self.reader = UsageReader(self.engine)
        self.writer = UsageWriter(self.engine)
        self.policies = PolicyBook(settings.tokens, settings.response.protect)
        self.exposition = Exposition(self.policies)
        self._token_rows = TokenRowCache()
        self._rows_building = asyncio.Lock()
        # On PostgreSQL several instances may share the work (monitor.cluster); on SQLite one does.
        instance = settings.cluster.instance or default_instance_name()
        names = [p.name for p in settings.providers]
        self.cluster: Cluster | Solo = (
            Cluster(self.engine, instance, settings.cluster.lease, names)
            if is_postgres(self.engine)
            else Solo(instance, names)
        )
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat_failing = False
        self.alerts = AlertEngine(
            settings,
            self.engine,
            clock=self.clock,
            providers=self._provider,
            known_states=self._all_states,
            ownership=self.cluster,
        )
        self.exposition.add_source(self.alerts.families)
        self.exposition.set_score_source(self.alerts.scores)
        self.loop_lag = LoopLag()
        self.gc = GcPolicy(self.clock) if manage_gc else None
        self.exposition.add_live_source(self.loop_lag.families)
        self.exposition.add_live_source(
            lambda: cluster_families(self.cluster, (p.name for p in self.settings.providers))
        )
        self.pollers: dict[str, Poller] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._provider_settings: dict[str, ProviderSettings] = {}
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.schedule = Schedule(self.scheduler, clock=self.clock, outcomes=self.exposition)
        self._primed: set[str] = set()  # providers polled by prime(): their next poll is an interval away
        self.server: EmbeddedServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.on_reload: list[Callable[[Settings], None]] = []

    # --- lifecycle ----------------------------------------------------------------------
    def _rebuild_history(self) -> None:
        n = self.alerts.rebuild_history(self._all_states(), self.reader)
        log.info("alert baselines rebuilt for %d tokens from the stored history", n)

    async def prime(self) -> None:
        """Build the providers and run one cycle of each now, before anything is scheduled."""
        await self._first_beat()
        self._add_owned_providers()
        await asyncio.gather(*(p.run_once() for p in self.pollers.values()))
        self._primed.update(self.pollers)

    def _add_owned_providers(self) -> None:
        for provider in self.settings.providers:
            if provider.name not in self.pollers and self.cluster.owns(provider.name):
                self._add_provider(provider)

    # --- several instances (monitor.cluster) ----------------------------------------------
    async def _first_beat(self) -> None:
        """Before polling anything: which providers are this instance's (all of them on SQLite).
        A database that does not answer yet is one line; the heartbeat keeps trying."""
        if not isinstance(self.cluster, Cluster) or self.cluster.owned() or self._heartbeat_task:
            return
        try:
            beat = await asyncio.to_thread(self.cluster.beat)
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "cluster: first heartbeat failed: %s (polling nothing until one succeeds)",
                describe_fault(exc),
            )
            self._heartbeat_failing = True
            return
        log.info(
            "instance %s: %d live, polling %s",
            self.cluster.instance,
            beat.live,
            ", ".join(self.cluster.owned()) or "nothing yet",
        )

    async def _heartbeat(self) -> None:
        """Renew leases every lease/3; providers gained are polled from the state their last
        owner stored, providers lost are dropped. A database that cannot be reached is one
        line when it goes and one when it comes back; meanwhile the leases run out locally
        and this instance stops acting (the others take over once they can reach it)."""
        assert isinstance(self.cluster, Cluster)
        cluster = self.cluster
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=cluster.period)
                return
            except TimeoutError:
                pass
            try:
                beat = await asyncio.to_thread(cluster.beat)
            except (SQLAlchemyError, OSError) as exc:
                if not self._heartbeat_failing:
                    log.error(
                        "cluster heartbeat failed: %s (leases lapse unless it recovers)", describe_fault(exc)
                    )
                self._heartbeat_failing = True
                beat = Beat()
            else:
                if self._heartbeat_failing:
                    log.info(
                        "cluster heartbeat recovered: polling %s", ", ".join(cluster.owned()) or "nothing"
                    )
                self._heartbeat_failing = False
            try:
                await self._reconcile(beat)
            except (SQLAlchemyError, OSError) as exc:  # reading a gained provider's state failed
                log.error(
                    "cluster: taking over providers failed: %s (tried again next heartbeat)",
                    describe_fault(exc),
                )

    async def _reconcile(self, beat: Beat) -> None:
        """Make the pollers match the leases held now. A provider taken again under a new epoch
        is rebuilt from the database: another instance may have polled it meanwhile."""
        owned = set(self.cluster.owned())
        current = set(self.pollers)
        retaken = set(beat.gained) & current
        drop = (current - owned) | retaken
        wanted = {p.name: p for p in self.settings.providers}
        add = [name for name in sorted((owned - current) | retaken) if name in wanted]
        if not drop and not add:
            return
        deadline = max((self._provider_settings[n].poll_deadline for n in drop), default=0.0)
        clients = [self._drop_provider(name) for name in sorted(drop)]
        if drop:
            self.alerts.release_providers(sorted(drop))
        added: list[str] = []
        try:
            for name in add:
                self._add_provider(wanted[name])
                added.append(name)
        finally:  # a database error part way: the providers added so far are adopted properly
            if added:
                states = [s for name in added for s in self.pollers[name].states.values()]
                self.alerts.adopt_providers(added, states, self.reader)
            self.exposition.retain_providers(self.pollers)
            self.schedule.register(self.jobs())  # before the old clients close: no run picks one up
            # A poll of a dropped provider may still be on its way (its write will be fenced):
            # its client closes once that poll's deadline has surely passed.
            dropped = [c for c in clients if c is not None]
            if dropped:
                asyncio.get_running_loop().create_task(_close_later(dropped, deadline + 5))
        log.info(
            "instance %s now polls %s (gained %s, lost %s)",
            self.cluster.instance,
            ", ".join(sorted(self.pollers)) or "nothing",
            ", ".join(add) or "none",
            ", ".join(sorted(drop)) or "none",
        )

    # Fleet-wide housekeeping runs on one instance: the holder of the `leader` lease (always
    # the only instance on SQLite).
    async def _led_retention(self) -> None:
        if self.cluster.leader():
            await self.prune()

    async def _led_digest(self) -> None:
        if self.cluster.leader():
            await self.audit_digest()

    async def _led_notification_prune(self) -> None:
        if self.cluster.leader():
            await self.prune_notifications()

    async def start(self, *, serve_http: bool = True) -> None:
        # What can refuse to start (a taken port, a broken key file) is checked before anything
        # runs, so a failed start is one line and no half-started poll.
        for ps in self.settings.providers:
            if (ps.action or self.settings.response.action) == "disable" and ps.kind not in CAN_DISABLE:
                log.warning(
                    "providers.%s: %s cannot disable a key, so keywatch will not quarantine its tokens; "
                    "set action: delete on it to let keywatch delete a leaked key (for good)",
                    ps.name,
                    ps.kind,
                )
        sock, app = None, None
        if serve_http:
            for warning in exposure_warnings(self.settings.listen, bool(self.settings.api_token)):
                log.warning(warning)
            sock = bind(self.settings.listen)
            app = build_app(
                exposition=self.exposition,
                readiness=self.readiness,
                tokens=self.token_rows_async,
                listen=self.settings.listen,
                api_token=lambda: self.settings.api_token,
                extra_routes=[*alerts_api.routes(self.alerts), *leak_reports.routes(self._intake())],
                instance=self._instance_facts,
            )
            # The console (console/): its own router in front of the API's routes.
            console = console_routes.routes(
                self.console_data(), api_token=lambda: self.settings.api_token, listen=self.settings.listen
            )
            app.add_middleware(console_routes.ConsoleFront, routes=console)
        await self._first_beat()
        self._add_owned_providers()
        if isinstance(self.cluster, Cluster):  # the others' alerts are theirs to keep
            self.alerts.release_providers(
                sorted({p.name for p in self.settings.providers} - set(self.cluster.owned()))
            )
        self._rebuild_history()
        self.scheduler.start()
        self.alerts.start()
        if isinstance(self.cluster, Cluster):
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")
        self.loop_lag.start()
        self.schedule.register(self.jobs())
        if sock is not None and app is not None:
            self.server = make_server(app, self.settings.listen)
            self._server_task = asyncio.create_task(self.server.serve(sockets=[sock]), name="http")
            while not self.server.started:
                if self._server_task.done():
                    self._server_task.result()  # re-raise: the address is bad
                    raise RuntimeError(f"the HTTP server on {self.settings.listen} stopped during start-up")
                await asyncio.sleep(0.01)
            log.info(
                "serving the console, /metrics, /healthz, /readyz and /api/v1 on http://%s",
                self.settings.listen,
            )

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._request_reload())
        await self._stop.wait()

    def stop_soon(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Stop taking new work, let a running cycle finish its transaction, then close."""
        log.info("stopping")
        if self.scheduler.running:
            self.scheduler.pause()  # no new runs; shutting down would cancel the ones in flight
        if self.server is not None and self._server_task is not None:
            self.server.should_exit = True
            await asyncio.wait({self._server_task}, timeout=6)
        # A cycle in flight either commits or rolls back as a whole; give it a moment to commit.
        await self.schedule.drain(grace=5)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.alerts.stop()
        await self.loop_lag.stop()
        if self._heartbeat_task is not None:
            await asyncio.wait({self._heartbeat_task}, timeout=2)
        if isinstance(self.cluster, Cluster):
            try:  # hand the providers over now rather than when the leases run out
                await asyncio.to_thread(self.cluster.release)
            except (SQLAlchemyError, OSError) as exc:
                log.warning(
                    "could not release the leases (they lapse in %g s): %s",
                    self.cluster.lease,
                    describe_fault(exc),
                )
        for client in self._clients.values():
            await client.aclose()
        self.engine.dispose()

    # --- scheduled work -----------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Everything the daemon does on a timer, in one list (monitor.jobs registers it, at start
        and on every reload): a poll per provider at its poll_interval (at once, or an interval
        after prime()), retention daily, the audit digest checked hourly (it goes out weekly, a
        week after the last one, remembered in the database), notification pruning hourly."""
        polls = [
            Job(
                f"poll:{name}",
                Every(ps.poll_interval, first_after=ps.poll_interval if name in self._primed else 0.0),
                self.pollers[name].run_once,
            )
            for name, ps in self._provider_settings.items()
        ]
        return [
            *polls,
            Job("retention", Every(RETENTION, first_after=HOUSEKEEPING_DELAY), self._led_retention),
            Job("audit_digest", Every(AUDIT_DIGEST_CHECK, first_after=HOUSEKEEPING_DELAY), self._led_digest),
            Job(
                "notification_prune",
                Every(NOTIFICATION_PRUNE, first_after=HOUSEKEEPING_DELAY),
                self._led_notification_prune,
            ),
        ]

    # --- providers ----------------------------------------------------------------------
    def _add_provider(self, ps: ProviderSettings) -> None:
        client = make_client(
            timeout=ps.timeout,
            max_connections=max(ps.concurrency, 8),
            user_agent=f"keywatch/{__version__} ({self.cluster.instance})",
        )
        health = self.exposition.health(ps.name)
        name, cluster = ps.name, self.cluster

        def count_retry(reason: str) -> None:
            health.retries[reason] = health.retries.get(reason, 0) + 1

        # Request logs resume right after the newest stored row: a restart neither re-reads nor skips.
        provider = build_provider(
            ps, client, on_retry=count_retry, log_cursor=self.reader.log_cursor(ps.name)
        )
        facts = self.reader.providers().get(ps.name)
        errors = {reason: n for (p, reason), n in self.reader.poll_error_counts().items() if p == ps.name}
        poller = Poller(
            provider,
            timezone=ps.timezone,
            writer=self.writer,
            exposition=self.exposition,
            clock=self.clock,
            states=self.reader.token_states(ps.name).get(ps.name, {}),
            watching_since=facts.first_complete_poll_at if facts else None,
            error_counts=errors,
            last_success=facts.last_success_at if facts else None,
            consecutive_failures=self.reader.consecutive_failures(ps.name),
            reader=self.reader,
            deadline=ps.poll_deadline,
            redactor=Redactor([ps.admin_token.reveal(), *(k.reveal() for k in ps.keys.values())]),
            owned=lambda: cluster.owns(name),
            guard=_guard(cluster, name) if isinstance(cluster, Cluster) else None,
        )
        poller.listeners.append(self._timed_rules(health))
        poller.listeners.append(self._settle)
        self.pollers[ps.name] = poller
        self._clients[ps.name] = client
        self._provider_settings[ps.name] = ps

    def _timed_rules(self, health: ProviderHealth) -> CycleListener:
        """The alert engine as a poll listener, its time per cycle in keywatch_rules_duration_seconds."""

        async def on_cycle(report: CycleReport) -> None:
            t0 = time.perf_counter()
            try:
                await self.alerts.on_cycle(report)
            finally:
                health.rules.observe(time.perf_counter() - t0)

        return on_cycle

    async def _settle(self, _report: CycleReport) -> None:
        """After a cycle and its rules: the daily full collection, when it is due."""
        if self.gc is not None:
            self.gc.settle()

    def _drop_provider(self, name: str) -> httpx.AsyncClient | None:
        """Forget a provider; its client is returned to be closed once its job is unscheduled."""
        self.pollers.pop(name, None)
        self._provider_settings.pop(name, None)
        self._primed.discard(name)
        return self._clients.pop(name, None)

    def _all_states(self) -> list[TokenState]:
        return [s for poller in self.pollers.values() for s in poller.states.values()]

    def _intake(self) -> leak_reports.ReportIntake:
        def lookup(digest: str) -> list[leak_reports.Match]:
            found = self.alerts.find_by_key_hash(digest)
            if found or not self.cluster.shared:
                return found
            # Another instance polls the token: the report is recorded and quarantined by it.
            return [
                leak_reports.Match(s.provider, s.token_id, s.name)
                for s in self.reader.tokens_with_key_hash(digest)
            ]

        try:
            return leak_reports.ReportIntake(
                self.settings.leak_reports, lookup=lookup, act=self.alerts.act_on_report
            )
        except (OSError, ValueError) as exc:  # the GitHub key file is missing or holds no key
            raise ConfigError("leak_reports.github_public_keys", str(exc)) from None

    def _provider(self, name: str) -> Provider | None:
        poller = self.pollers.get(name)
        return poller.provider if poller else None

    # --- reload -------------------------------------------------------------------------
    def _request_reload(self) -> None:
        asyncio.get_running_loop().create_task(self.reload_from_file())

    async def reload_from_file(self) -> None:
        from monitor.config import load_settings

        source = self.settings.source
        if source is None:
            log.warning("SIGHUP: no config file to reload")
            return
        try:
            new = load_settings(source)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running config: %s", exc)
            return
        await self.reload(new)

    async def reload(self, new: Settings) -> None:
        """Swap to an already validated Settings. Providers whose settings did not change keep
        their poller (and its state) untouched."""
        if new.database != self.settings.database or new.listen != self.settings.listen:
            log.warning("reload: database and listen changes take effect at the next restart")
        wanted = {p.name: p for p in new.providers}
        changed = [n for n in self.pollers if n not in wanted or wanted[n] != self._provider_settings[n]]
        dropped = [self._drop_provider(name) for name in changed]
        self.settings = new
        self.policies = PolicyBook(new.tokens, new.response.protect)
        self.exposition.set_policies(self.policies)
        self.cluster.set_providers(wanted)  # a cluster settles the new set at its next heartbeat
        for name, ps in wanted.items():
            if name not in self.pollers and self.cluster.owns(name):
                self._add_provider(ps)
        self.exposition.retain_providers(wanted)
        self.alerts.reconfigure(new)
        self.schedule.register(self.jobs())  # before the old clients close: no run picks one up
        for client in dropped:
            if client is not None:
                await client.aclose()
        for hook in self.on_reload:
            hook(new)
        log.info("reloaded config: %d providers", len(wanted))

    # --- reads --------------------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """Per provider: polled successfully, and not so long ago that its figures are stale
        (three poll intervals and a poll deadline: a relay that hangs or fails turns this off)."""
        now = self.clock.now()
        out = {}
        for name, poller in self.pollers.items():
            ps = self._provider_settings[name]
            last = self.exposition.health(name).last_success
            fresh = last is not None and now - last <= 3 * ps.poll_interval + ps.poll_deadline
            out[name] = poller.succeeded_once and fresh
        return out

    def console_data(self) -> DaemonConsoleData:
        """What the console (console.routes) reads and does, over this daemon's parts."""
        return DaemonConsoleData(
            engine=self.engine,
            alerts=self.alerts,
            reader=self.reader,
            states=self._all_states,
            policies=lambda: self.policies,
            settings=lambda: self.settings,
            health=self.exposition.health,
            readiness=self.readiness,
        )

    def _instance_facts(self) -> dict[str, object]:
        """/readyz: which instance answers and what it polls (several may share the database)."""
        return {
            "instance": self.cluster.instance,
            "owns": self.cluster.owned(),
            "leader": self.cluster.leader(),
        }

    def token_rows(self) -> bytes:
        """GET /api/v1/tokens: built again only when a state, the policies or a score changed."""
        return self._token_rows.body(self._all_states(), self.policies, self.alerts.scores())

    async def token_rows_async(self) -> bytes:
        """token_rows for the HTTP API: the inputs read on the event loop, a rebuild (after a
        poll; 0.4 s at 100,000 tokens) in a worker thread, one at a time."""
        states, policies, scores = self._all_states(), self.policies, dict(self.alerts.scores())
        ready = self._token_rows.ready(states, policies, scores)
        if ready is not None:
            return ready
        async with self._rows_building:
            ready = self._token_rows.ready(states, policies, scores)
            if ready is not None:
                return ready
            return await asyncio.to_thread(self._token_rows.build, states, policies, scores)

    async def audit_digest(self) -> None:
        """Checked hourly; the digest itself goes out once a week (its schedule is in the database).
        With several instances the leader sends it, on every token in the database."""
        if self.cluster.shared:
            by_provider = await asyncio.to_thread(self.reader.token_states)
            states = [s for by_id in by_provider.values() for s in by_id.values()]
        else:
            states = self._all_states()
        self.alerts.send_digest_if_due(states)

    async def prune(self) -> None:
        pruned = await asyncio.to_thread(prune, self.engine, self.settings.retention, now=self.clock.now())
        if isinstance(self.cluster, Cluster):  # members killed long ago leave the live set's table
            await asyncio.to_thread(self.cluster.forget_departed, 86400.0)
        log.info(
            "retention: removed %d deltas, %d hourly rows, %d poll runs, %d logged requests",
            pruned.deltas,
            pruned.hourly,
            pruned.poll_runs,
            pruned.requests,
        )

    async def prune_notifications(self) -> None:
        pruned = self.alerts.prune()
        if pruned.outbox or pruned.alerts or pruned.log:
            log.info(
                "notifications: removed %d finished outbox rows, forgot %d long-resolved alerts and "
                "%d long-quiet groups",
                pruned.outbox,
                pruned.alerts,
                pruned.log,
            )


def _guard(cluster: Cluster, provider: str) -> Callable[[Connection], None]:
    """The fence of one poller: the lease at the epoch it was built under (a poller rebuilt
    after the provider was taken again makes its predecessor's late write fail)."""
    epoch = cluster.epoch(provider)

    def check(conn: Connection) -> None:
        cluster.guard(conn, provider, epoch=epoch)

    return check


async def _close_later(clients: list[httpx.AsyncClient], delay: float) -> None:
    await asyncio.sleep(delay)
    for client in clients:
        await client.aclose()


def command_handlers() -> dict[str, Callable[[Any, Settings], int]]:
    """The alert side's CLI command handlers (monitor/cli.py declares their options)."""
    return alerts_cli.handlers()
