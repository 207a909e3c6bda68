"""The alert engine and the leak response as an operator meets them: `keywatch simulate` and
`keywatch run` as separate processes, a real SMTP server (aiosmtpd) and a real webhook receiver
on loopback, Apprise's mailto:// and json:// URLs pointed at them.

- issue 3: a dev token blows through its daily budget -> one FIRING notice by email and by
  webhook; the relay's day rolls over -> one RESOLVED notice on each; nothing else.
- issue 4: a dormant dev token's key leaks -> quarantined (disabled at the relay) within two
  polls and the people told; a protected production token under the same attack -> a security
  alert that says it was not quarantined, and the token stays enabled."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from datetime import time as dtime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.procs import ROOT, SIM_ADMIN, free_port, keywatch, metric_samples, simulator_config, wait_for

pytestmark = pytest.mark.e2e


# --- receivers ---------------------------------------------------------------------------------


class _Mailbox:
    """aiosmtpd handler: every message delivered, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
        with self._lock:
            self.messages.append(msg)
        return "250 OK"

    def mails(self) -> list[tuple[str, str]]:
        """(subject, plain body) of every message so far."""
        with self._lock:
            msgs = list(self.messages)
        out = []
        for m in msgs:
            part = m.get_body(("plain",))
            out.append((str(m["Subject"]), part.get_content() if part is not None else ""))
        return out


@contextmanager
def smtp_server() -> Iterator[tuple[_Mailbox, str]]:
    """A plain SMTP server on loopback; yields the mailbox and the Apprise URL that reaches it."""
    box = _Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # mailto:// (not mailtos://) without a user: plain SMTP, no STARTTLS, no login
        yield box, f"mailto://127.0.0.1:{port}?from=keywatch@example.com&to=ops@example.com"
    finally:
        controller.stop()


class _Hook(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


class _HookHandler(BaseHTTPRequestHandler):
    server: _Hook

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.received.append({"path": self.path, "at": time.time(), **body})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def webhook() -> Iterator[tuple[_Hook, str]]:
    """A JSON webhook receiver on loopback; yields it and the Apprise json:// URL that reaches it."""
    hook = _Hook()
    thread = threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook, f"json://127.0.0.1:{hook.server_address[1]}/hook"
    finally:
        hook.shutdown()
        hook.server_close()
        thread.join(timeout=5)


# --- the processes -----------------------------------------------------------------------------


def post(sim: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{sim}/_sim/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return metric_samples(httpx.get(f"{base}/metrics", timeout=10).text)


def sample(base: str, name: str, **labels: str) -> float:
    return samples(base).get((name, frozenset(labels.items())), 0.0)


def poll_count(base: str) -> float:
    return sample(base, "keywatch_poll_duration_seconds_count", provider="sim")


def cli(cfg: Path, *args: str) -> Any:
    """`keywatch -c CFG ARGS --json` as a process; its stdout as JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(cfg), *args, "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def next_midnight(now: float, tz: str) -> float:
    """The first midnight after `now` in the relay's time zone."""
    zone = ZoneInfo(tz)
    tomorrow = datetime.fromtimestamp(now, zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, dtime(), zone).timestamp()


# --- issue 3: one notification per real problem, one when it recovers ---------------------------


def test_budget_alert_by_email_and_webhook_fires_once_and_resolves_once(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    with (
        smtp_server() as (mailbox, mail_url),
        webhook() as (hook, hook_url),
        keywatch(
            "simulate", "--listen", f"127.0.0.1:{sim_port}", "--flavor", "laozhang", "--tokens", "12",
            "--seed", "4", log=tmp_path / "sim.log",
        ),
    ):  # fmt: skip
        truth = wait_for(lambda: httpx.get(f"{sim}/_sim/truth").json(), what="the simulator")
        devs = [t for t in truth["tokens"] if t["name"].startswith("dev-") and t["status"] == "active"]
        assert devs, [t["name"] for t in truth["tokens"]]
        token = devs[0]["name"]
        budget = float(int(devs[0]["today_usage"]) + 5)  # not reached by its own traffic
        cfg = simulator_config(
            tmp_path / "kw.yaml",
            sim_port=sim_port,
            listen_port=port,
            db=tmp_path / "kw.db",
            extra=f"""
tokens:
  - match: "{token}"
    budget: {{daily_usd: {budget}, monthly_usd: 1000000}}
  - match: "*"
    budget: {{daily_usd: 1000000, monthly_usd: 1000000}}
rules:
  budget: {{thresholds: [1.0]}}
  anomaly: {{enabled: false}}
  expiry: {{warn_before: 0s}}
  unused: {{after: 3650d}}
  rotation: {{prod: 3650d, default: 3650d}}
notify:
  urls:
    - url: "{mail_url}"
      tags: [critical, warning, security]
    - url: "{hook_url}"
      tags: [critical, warning, info, security]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
""",
        )

        def budget_mails(head: str) -> list[tuple[str, str]]:
            return [(s, b) for s, b in mailbox.mails() if s.startswith(head) and "budget" in s and token in s]

        def budget_hooks(head: str) -> list[dict[str, Any]]:
            return [
                h
                for h in hook.bodies()
                if h["title"].startswith(head) and "budget" in h["title"] and token in h["title"]
            ]

        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            polls = poll_count(base)
            wait_for(lambda: poll_count(base) >= polls + 3, what="three quiet polls")
            assert mailbox.mails() == [] and hook.bodies() == []  # a quiet fleet: nothing to say

            added = post(sim, "over-budget", {"token": token, "window": "day", "target_usd": budget})[
                "added_usd"
            ]
            assert added > 0
            ((subject, body),) = wait_for(
                lambda: budget_mails("[FIRING"), timeout=20, what="the FIRING email"
            )
            (fired,) = wait_for(lambda: budget_hooks("[FIRING"), timeout=20, what="the FIRING webhook")
            assert subject == fired["title"] == f"[FIRING:1] budget · sim/{token}"
            for text in (body, fired["message"]):
                assert "day budget" in text and f"of ${budget:,.2f}" in text, text
            assert fired["path"] == "/hook" and fired["type"] == "failure"

            alerts = cli(cfg, "alerts")
            (firing,) = [a for a in alerts if a["rule"] == "budget" and a["token"] == token]
            assert (firing["state"], firing["severity"], firing["provider"]) == ("firing", "critical", "sim")
            assert firing["value"] >= 1.0
            wait_for(
                lambda: sample(base, "keywatch_alerts_firing", rule="budget", severity="critical") == 1,
                timeout=5,
                what="keywatch_alerts_firing{rule=budget,severity=critical} 1",
            )

            # The relay's day rolls over: its day figure drops, and with it the alert.
            now = httpx.get(f"{sim}/_sim/truth").json()
            post(sim, "advance", {"to": next_midnight(now["now"], now["tz"]) + 60})
            ((subject, body),) = wait_for(
                lambda: budget_mails("[RESOLVED"), timeout=20, what="the RESOLVED email"
            )
            (resolved,) = wait_for(lambda: budget_hooks("[RESOLVED"), timeout=20, what="the RESOLVED webhook")
            assert subject == resolved["title"] == f"[RESOLVED] budget · sim/{token}"
            assert resolved["type"] == "success"

            # Nothing more: wait out a few group intervals (polls keep coming every second).
            polls = poll_count(base)
            wait_for(lambda: poll_count(base) >= polls + 5, what="five more polls")
            assert len(mailbox.mails()) == 2, [s for s, _ in mailbox.mails()]
            assert len(hook.bodies()) == 2, [h["title"] for h in hook.bodies()]
            assert sample(base, "keywatch_notifications_total", outcome="sent") == 2
            assert sample(base, "keywatch_alerts_firing", rule="budget", severity="critical") == 0
            # one per notification (each reached both targets): the FIRING one and the RESOLVED one
            assert sample(base, "keywatch_notifications_total", outcome="sent") == 2
            assert sample(base, "keywatch_notifications_total", outcome="failed") == 0
            assert [a for a in cli(cfg, "alerts") if a["rule"] == "budget"] == []

            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0


# --- issue 4: a leaked key is quarantined within two polls; a protected one only alerts ----------

LEAK_TOKENS, LEAK_SEED, HISTORY_DAYS = 24, 7, 14


def seed_history(
    db: Path | str, truth: dict[str, Any], *, tokens: int, seed: int, provider: str = "sim"
) -> None:
    """What `keywatch demo` does before its story (monitor/demo.py `_seed_history`), done to the
    stopped daemon's database: 14 days of hourly usage, each active token's usual clients and
    models in the request log every day (the last time half an hour ago), and first-seen moved
    back, as if keywatch had been watching all along. The usage and the clients come from a twin
    of the simulated relay built from the same seed (the simulator draws everything from it):
    /_sim/truth has no IPs or models, and /_sim/events only what was booked since it started.
    The newest log row being recent matters: the restarted daemon resumes reading the relay's log
    from it, an hour a poll (LogWindow.max_span), and must be caught up before the leak."""
    from monitor.model import RequestRecord
    from monitor.simulator import Archetype, make_relay
    from monitor.store import UsageReader, UsageWriter, open_engine

    now = float(truth["now"])
    twin = make_relay(tokens=tokens, seed=seed, start=now)
    listed = {(t["id"], t["name"]) for t in truth["tokens"] if not t["deleted"]}
    assert {(t.id, t.name) for t in twin.list_tokens()} == listed, "the twin is not the simulator's relay"
    since = now - HISTORY_DAYS * 86400
    engine = open_engine(db if isinstance(db, str) else f"sqlite:///{db}")  # a path, or any database URL
    try:
        states = UsageReader(engine).token_states(provider)[provider]
        by_name = {s.name: s for s in states.values()}
        assert set(by_name) == {name for _, name in listed}
        points = [
            (by_name[r.name].pk or 0, r.ts, r.cost_usd, r.requests)
            for r in twin.history(since, now - 3600, step=3600)
        ]
        records = []
        for tok in twin.list_tokens():
            if tok.archetype in (Archetype.IDLE, Archetype.DORMANT):
                continue
            token_id = by_name[tok.name].token_id
            for day in range(HISTORY_DAYS):
                ts = now - 1800 - day * 86400
                for i, ip in enumerate(tok.ips):
                    model = tok.models[i % len(tok.models)]
                    records.append(
                        RequestRecord(token_id, tok.name, ts, model, ip, 0, 0, 0.0, None, f"seed-{day}-{i}")
                    )
                for i, model in enumerate(tok.models):
                    records.append(
                        RequestRecord(
                            token_id, tok.name, ts, model, tok.ips[0], 0, 0, 0.0, None, f"seed-{day}-m{i}"
                        )
                    )
        UsageWriter(engine).write_history(points, records=records, states=states, watched_since=since)
    finally:
        engine.dispose()


def leak_policies(hook_url: str) -> str:
    """The config after `providers:` for a leak story: no budgets in the way, only the leak rule
    speaking, automatic quarantine on, every notice to the webhook (shared with the cluster tests)."""
    return f"""tokens:
  - match: "prod-*"
    budget: {{daily_usd: 1000000, monthly_usd: 1000000}}
    protected: true
  - match: "*"
    budget: {{daily_usd: 1000000, monthly_usd: 1000000}}
rules:
  anomaly: {{enabled: false}}  # spend_anomaly would join the leak's group as the attack goes on
  expiry: {{warn_before: 0s}}
  unused: {{after: 3650d}}
  rotation: {{prod: 3650d, default: 3650d}}
response:
  auto_revoke: true
notify:
  urls:
    - url: "{hook_url}"
      tags: [security, critical, warning, info]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
"""


def leak_config(path: Path, *, sim_port: int, listen_port: int, db: Path, hook_url: str) -> Path:
    path.write_text(
        f"""
database: sqlite:///{db}
listen: 127.0.0.1:{listen_port}
providers:
  - name: sim
    kind: newapi
    base_url: http://127.0.0.1:{sim_port}
    admin_token: {SIM_ADMIN}
    user_id: 1
    reveal_keys: true
    poll_interval: 1s
    timeout: 5s
"""
        + leak_policies(hook_url)
    )
    return path


def polls_between(db: Path, after: float, until: float) -> int:
    """Polls that finished after `after` and no later than `until` (the daemon's poll_runs)."""
    with closing(sqlite3.connect(db)) as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM poll_runs WHERE provider = 'sim' AND finished_at > ? AND finished_at <= ?",
            (after, until),
        ).fetchone()
    return int(n)


def quarantines(db: Path) -> list[tuple[str, str, str, float]]:
    """(token, mode, state, requested_at) of every row of the responder's audit trail."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT token, mode, state, requested_at FROM quarantine_actions ORDER BY id"
        ).fetchall()
    return [(str(t), str(m), str(s), float(r)) for t, m, s, r in rows]


def test_leaked_dev_token_is_quarantined_within_two_polls_and_protected_prod_token_only_alerts(
    tmp_path: Path,
) -> None:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    db = tmp_path / "kw.db"
    with (
        webhook() as (hook, hook_url),
        keywatch(
            "simulate", "--listen", f"127.0.0.1:{sim_port}", "--flavor", "newapi",
            "--tokens", str(LEAK_TOKENS), "--seed", str(LEAK_SEED), log=tmp_path / "sim.log",
        ),
    ):  # fmt: skip
        truth = wait_for(lambda: httpx.get(f"{sim}/_sim/truth").json(), what="the simulator")
        live = [t for t in truth["tokens"] if not t["deleted"] and t["status"] == "active"]
        # The classic victim: a dormant dev/test token nobody watches. And a busy production
        # service token, protected by policy, under the very same attack.
        (dev,) = [t for t in live if t["archetype"] == "dormant" and t["name"].startswith(("dev-", "test-"))]
        prod = max(
            (t for t in live if t["name"].startswith("prod-") and t["archetype"] == "service"),
            key=lambda t: t["usd_per_hour"],
        )
        cfg = leak_config(tmp_path / "kw.yaml", sim_port=sim_port, listen_port=port, db=db, hook_url=hook_url)

        # A first run creates the database and learns the tokens; then 14 days of history go in.
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw1.log") as first:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=10) == 0
        seed_history(db, httpx.get(f"{sim}/_sim/truth").json(), tokens=LEAK_TOKENS, seed=LEAK_SEED)

        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw2.log"):
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz after seeding")
            polls = poll_count(base)
            wait_for(lambda: poll_count(base) >= polls + 3, what="three quiet polls")
            assert hook.bodies() == [] and quarantines(db) == []  # two weeks of normal use: nothing to say

            # Both keys leak: strangers spend 20x the token's busiest hour from six never-seen
            # addresses on expensive models. The relay books traffic by the minute and keywatch
            # polls every second here, so the relay's clock jumps five minutes: the attack's first
            # five minutes land in one poll, as they would with a five-minute poll interval.
            started = time.time()
            for t in (dev, prod):
                post(sim, "leak", {"token": t["name"]})
            post(sim, "advance", {"seconds": 300})

            def quarantined() -> list[tuple[str, str, str, float]] | None:
                rows = quarantines(db)
                done = any(t == dev["name"] and st == "done" for t, _, st, _ in rows)
                return rows if done and status(sim, dev["name"]) == "disabled" else None

            rows = wait_for(quarantined, timeout=15, what=f"{dev['name']} quarantined at the relay")
            assert sorted((t, m, st) for t, m, st, _ in rows) == sorted(
                [(dev["name"], "auto", "done"), (prod["name"], "auto", "blocked")]
            ), rows
            done_at = next(at for t, _, _, at in rows if t == dev["name"])
            assert 1 <= polls_between(db, started, done_at) <= 2, "not within two polls of the leak"

            def told(token: str) -> dict[str, Any] | None:
                found = [h for h in hook.bodies() if "leak_suspected" in h["title"] and token in h["title"]]
                assert len(found) <= 1, found
                return found[0] if found else None

            dev_notice = wait_for(lambda: told(dev["name"]), timeout=10, what="the dev token's leak notice")
            prod_notice = wait_for(
                lambda: told(prod["name"]), timeout=10, what="the prod token's leak notice"
            )
            # Told one group_wait (1 s) after the alert fired, give or take a sender tick.
            assert dev_notice["at"] - done_at < 4 and prod_notice["at"] - done_at < 4
            assert dev_notice["title"].startswith(
                f"[FIRING:1] leak_suspected · sim/{dev['name']} — quarantined"
            )
            assert "done: quarantined" in dev_notice["message"]
            assert "1. Revoked: keywatch quarantined the token." in dev_notice["message"]
            assert dev_notice["type"] == "failure"
            assert prod_notice["title"] == (
                f"[FIRING:1] leak_suspected · sim/{prod['name']} — protected: not quarantined"
            )
            assert "done: protected: not quarantined" in prod_notice["message"]
            assert "the token is protected" in prod_notice["message"]

            def revocations() -> dict[str, float]:
                return {
                    dict(labels)["outcome"]: v
                    for (name, labels), v in samples(base).items()
                    if name == "keywatch_revocations_total" and ("mode", "auto") in labels and v
                }

            wait_for(
                lambda: revocations() == {"done": 1, "blocked": 1}, timeout=5, what="the revocation counts"
            )
            assert sample(base, "keywatch_alerts_firing", rule="leak_suspected", severity="security") == 2

            # The protected token stays enabled while the attack goes on; nothing else is said.
            polls = poll_count(base)
            wait_for(lambda: poll_count(base) >= polls + 4, what="four more polls")
            assert status(sim, prod["name"]) == "active"
            assert [r[:3] for r in quarantines(db)] == [r[:3] for r in rows]
            assert len(hook.bodies()) == 2, [h["title"] for h in hook.bodies()]
            assert sample(base, "keywatch_notifications_total", outcome="sent") == 2


def status(sim: str, token: str) -> str:
    (row,) = [t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"] if t["name"] == token]
    return str(row["status"])
