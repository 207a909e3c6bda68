"""leak_suspected: each signal alone stays quiet, two agreeing signals fire, lookalikes do not."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from alerts.detection.fleet import FleetContext
from alerts.detection.leak import LeakDetector, LeakResult, Signal, TokenInfo, leak_finding
from alerts.detection.series import TokenHistory
from monitor.model import TokenLimits
from monitor.settings import LeakRule, TokenPolicy
from tests.alerts.scenarios import (
    DAY,
    HOUR,
    START,
    STEP,
    Feeder,
    Line,
    office,
    rotating_pool,
    service,
    sparse,
)

IPS = ("198.18.0.10", "198.18.0.11")
FLEET = FleetContext(
    at=0.0, established=20, ips_typical=2, models_typical=1, model_users={"m-mini": 15}, fleet_model_min=4
)
BUSINESS = TokenPolicy(match="*", business_hours="mon-fri 07:00-20:00 Europe/Berlin")
DETECTOR = LeakDetector()


def watch(
    f: Feeder[LeakResult],
    *,
    policy: TokenPolicy | None = None,
    meta: TokenInfo | None = None,
    fleet: FleetContext = FLEET,
) -> Callable[[float], LeakResult]:
    def each(now: float) -> LeakResult:
        r = DETECTOR.evaluate(f.history, now, policy, meta, fleet)
        if r.fire:
            f.history.mark_anomalous(now, 3600)
        return r

    return each


def names(results: list[LeakResult]) -> set[str]:
    return {s.name for r in results for s in r.signals if s.counted}


def token(seed: int = 1, **kw: object) -> Feeder[LeakResult]:
    """A 24x7 service token on two server IPs with two weeks of history."""
    f: Feeder[LeakResult] = Feeder(service(250), seed=seed, ips=IPS, dispersion=12, **kw)  # type: ignore[arg-type]
    f.run(14 * DAY)
    return f


def attacker(
    f: Feeder[LeakResult], per_step: int, models: tuple[str, ...], ips: tuple[str, ...]
) -> Callable[[float], list[Line]]:
    def lines(now: float) -> list[Line]:
        k = int(now // STEP)
        return [f.line(per_step // len(ips), models[k % len(models)], ip) for ip in ips]

    return lines


# --- each signal alone does not fire ---------------------------------------------------------------


def test_a_x8_spike_from_the_usual_ips_and_models_does_not_fire() -> None:
    f = token()
    results = f.run(3 * HOUR, mult=8.0, each=watch(f))
    assert "spike" in names(results)
    assert not any(r.fire for r in results)


def test_a_dormant_token_resuming_its_old_clients_does_not_fire() -> None:
    f = token()
    f.run(20 * DAY, quiet=True)
    results = f.run(6 * HOUR, each=watch(f))
    assert "dormant_wake" in names(results)
    assert not any(r.fire for r in results)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: [f.line(40, "m-mini", "203.0.113.7")],  # a new IP at the usual volume
        lambda f: [f.line(40, "m-flash", IPS[0])],  # a new (cheap) model at the usual volume
        lambda f: [f.line(2, "m-mini", f"203.0.113.{int(f.now // STEP) % 200}")],  # many IPs, little use
    ],
    ids=["new-ip", "new-model", "many-ips"],
)
def test_who_uses_a_token_alone_does_not_fire(change: Callable[[Feeder[LeakResult]], list[Line]]) -> None:
    f = token()
    results = f.run(DAY, extra=lambda now: change(f), each=watch(f))
    assert not any(r.fire for r in results)
    assert not any(r.signals for r in results)  # no primary signal: the rest is not even computed


def test_a_whitelist_violation_without_a_spike_does_not_fire() -> None:
    f = token()
    meta = TokenInfo(ip_whitelist=("198.18.0.10",))  # .11 is outside, at its usual volume
    assert not any(r.fire for r in f.run(DAY, each=watch(f, meta=meta)))


def test_quiet_off_hours_use_does_not_fire() -> None:
    f: Feeder[LeakResult] = Feeder(office(200, 1, night=0.05), seed=2, ips=IPS, dispersion=12)
    f.run(14 * DAY)
    results = f.run(2 * DAY, each=watch(f, policy=BUSINESS))
    assert not any(r.fire for r in results)


# --- two agreeing signals fire -----------------------------------------------------------------------


def test_spike_with_new_ips_fires_at_once() -> None:
    f = token()
    thief = attacker(f, 600, ("m-mini",), ("45.13.1.1", "45.13.1.2", "45.13.1.3"))
    results = f.run(HOUR, extra=thief, each=watch(f))
    assert results[0].fire
    assert {"spike", "new_ip"} <= set(results[0].names)
    assert set(results[0].top_ips) >= {"45.13.1.1", "45.13.1.2", "45.13.1.3"}
    assert results[0].onset_ts is not None and results[0].onset_ts <= f.now
    assert results[-1].spend_since_onset > results[0].spend_since_onset > 0


def test_spike_from_outside_the_whitelist_fires() -> None:
    f = token()
    meta = TokenInfo(ip_whitelist=("198.18.0.0/24",))
    results = f.run(HOUR, extra=attacker(f, 600, ("m-mini",), ("203.0.113.9",)), each=watch(f, meta=meta))
    assert results[0].fire and "ip_not_whitelisted" in results[0].names


def test_spike_with_expensive_new_models_from_a_usual_ip_fires() -> None:
    f = token()  # a compromised server: same IP, but models the token never used
    results = f.run(HOUR, extra=attacker(f, 200, ("m-opus", "m-pro"), (IPS[0],)), each=watch(f))
    assert results[0].fire and {"spike", "new_model"} <= set(results[0].names)
    assert "m-pro" in results[0].top_models


def test_spike_off_hours_fires_when_the_relay_reports_no_ips() -> None:
    f: Feeder[LeakResult] = Feeder(office(200, 1), seed=3, report_ips=False, dispersion=12)
    f.run(15 * DAY + HOUR)  # Tuesday 01:00 UTC: night in Berlin
    results = f.run(HOUR, extra=lambda now: [f.line(150, "m-mini", None)], each=watch(f, policy=BUSINESS))
    assert any(r.fire for r in results[:2])
    assert {"spike", "off_hours"} <= names(results)


def test_spike_over_the_daily_request_limit_fires() -> None:
    f = token()
    meta = TokenInfo(limits=TokenLimits(daily_requests=6000))
    results = f.run(4 * HOUR, mult=8.0, each=watch(f, meta=meta))
    assert any(r.fire for r in results) and "over_request_limit" in names(results)


def test_spike_with_a_model_outside_allowed_models_fires() -> None:
    f = token()
    meta = TokenInfo(limits=TokenLimits(allowed_models=("m-mini",)))
    results = f.run(HOUR, extra=attacker(f, 400, ("m-large",), IPS), each=watch(f, meta=meta))
    assert results[0].fire and "model_not_allowed" in results[0].names


def test_a_never_used_token_waking_with_many_models_and_ips_fires_within_a_few_polls() -> None:
    f: Feeder[LeakResult] = Feeder(service(0), seed=4, idle_since=START - 90 * DAY)
    f.run(20 * DAY, quiet=True)
    models = ("m-opus", "m-mini", "m-pro", "m-large")
    thief = lambda now: [f.line(120, models[int(now // STEP) % 4], f"185.220.9.{int(now // STEP) % 250}")]  # noqa: E731
    results = f.run(2 * HOUR, extra=thief, each=watch(f))
    first = next(i for i, r in enumerate(results) if r.fire)
    assert first <= 3
    assert {"dormant_wake"} <= names(results) and names(results) & {"model_breadth", "many_ips"}


def test_a_swarm_on_a_sparse_token_fires() -> None:
    f: Feeder[LeakResult] = Feeder(sparse(random.Random(2), per_day=3, size=30), seed=7, ips=IPS[:1])
    f.run(14 * DAY)
    swarm = lambda now: [f.line(20, "m-mini", f"5.188.{int(now // STEP) % 9}.{i}") for i in range(12)]  # noqa: E731
    results = f.run(HOUR, extra=swarm, each=watch(f))
    assert any(r.fire for r in results[:2]) and {"new_ip", "many_ips"} <= names(results)


# --- benign lookalikes -------------------------------------------------------------------------------


def test_a_launch_that_adds_servers_does_not_fire() -> None:
    f = token()
    servers = ("198.18.7.20", "198.18.7.21")
    new_servers = lambda now: [f.line(25, "m-mini", ip) for ip in servers]  # noqa: E731
    results = f.run(3 * DAY, mult=1.6, extra=new_servers, each=watch(f))  # x2.2 overall, new IPs ~30%
    assert not any(r.fire for r in results)


def test_a_month_end_batch_at_night_from_the_usual_servers_does_not_fire() -> None:
    f: Feeder[LeakResult] = Feeder(office(200, 1), seed=5, ips=IPS, dispersion=12)
    f.run(15 * DAY + 20 * HOUR)  # Tuesday 20:00 UTC, after hours in Berlin
    results = f.run(4 * HOUR, extra=attacker(f, 1500, ("m-mini",), IPS), each=watch(f, policy=BUSINESS))
    assert "spike" in names(results)
    off = [s for r in results for s in r.signals if s.name == "off_hours"]
    assert off and not any(s.counted for s in off)
    assert not any(r.fire for r in results)


def test_a_fleet_wide_model_change_with_a_price_rise_does_not_fire() -> None:
    f = token()
    switch = attacker(f, 600, ("m-mini-2",), IPS)
    rollout = dataclasses.replace(FLEET, model_adopters={"m-mini-2": 30})
    results = f.run(2 * HOUR, extra=switch, each=watch(f, fleet=rollout))
    assert "spike" in names(results) and not any(r.fire for r in results)
    # the same traffic without a fleet-wide rollout would be a new model on a spike
    g = token()
    alone = g.run(2 * HOUR, extra=attacker(g, 600, ("m-mini-2",), IPS), each=watch(g))
    assert any(r.fire for r in alone)


def test_a_spike_on_a_token_with_rotating_client_ips_does_not_fire() -> None:
    pool = rotating_pool(random.Random(1), 40, 0.2)
    f: Feeder[LeakResult] = Feeder(service(250), seed=6, ip_pool=pool, dispersion=12)
    f.run(14 * DAY)
    results = f.run(3 * HOUR, mult=8.0, each=watch(f))
    assert "spike" in names(results) or any(s.name == "spike" for r in results for s in r.signals)
    assert not any(r.fire for r in results)


# --- parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("whitelist", "ip", "outside"),
    [
        (("198.18.0.0/24",), "198.18.0.77", False),
        (("198.18.0.0/24",), "198.18.1.77", True),
        (("198.18.0.5",), "198.18.0.5", False),
        (("2001:db8::/32",), "2001:db8::1", False),
        (("2001:db8::/32",), "198.18.0.5", True),
        (("198.18.0.0/24",), "::ffff:198.18.0.9", False),  # IPv4-mapped IPv6
        (("not-an-ip", "198.18.0.0/24"), "198.18.0.9", False),
    ],
)
def test_whitelists_are_cidr_aware(whitelist: tuple[str, ...], ip: str, outside: bool) -> None:
    f = token()
    meta = TokenInfo(ip_whitelist=(*whitelist, *IPS))
    r = f.run(STEP, extra=attacker(f, 2000, ("m-mini",), (ip,)), each=watch(f, meta=meta))[0]
    assert ("ip_not_whitelisted" in r.names) is outside


def test_fleet_context_tells_a_rollout_from_a_few_tokens_taking_a_model() -> None:
    now = START + 20 * DAY
    states = []
    for i in range(20):
        s = TokenHistory(START)
        s.observe(START + DAY, 1.0, 10, "m-mini", f"198.18.0.{i}")
        s.observe(now - HOUR, 1.0, 10, "m-mini-2" if i < 8 else "m-mini", f"198.18.0.{i}")
        if i < 2:
            s.observe(now - HOUR, 1.0, 10, "m-opus", f"198.18.0.{i}")
        states.append(s)
    fleet = FleetContext.build(states, now)
    assert fleet.is_fleet_model("m-mini-2")
    assert fleet.is_fleet_model("m-mini")  # everyone's model
    assert not fleet.is_fleet_model("m-opus")


def test_finding_says_which_signals_agreed() -> None:
    r = LeakResult(
        (Signal("spike", "$9/h"), Signal("new_ip", "3 new IPs"), Signal("off_hours", "", counted=False)),
        True,
        12.5,
        START,
        ("m-opus",),
        ("45.13.1.1",),
    )
    finding = leak_finding(r, provider="lz", token="t", rule=LeakRule())
    assert finding is not None and finding.severity == "security" and finding.value == 2
    assert "spike, new_ip" in finding.summary
    assert leak_finding(dataclasses.replace(r, fire=False), provider="lz", token="t", rule=LeakRule()) is None


def test_a_disabled_rule_is_quiet() -> None:
    f = token()
    results = f.run(
        HOUR,
        extra=attacker(f, 600, ("m-opus",), ("45.13.1.1",)),
        each=lambda now: DETECTOR.evaluate(f.history, now, None, None, FLEET, rule=LeakRule(enabled=False)),
    )
    assert not any(r.fire or r.signals for r in results)


@pytest.mark.slow
async def test_a_synthetic_fleet_replays_with_every_leak_caught_and_no_false_quarantine() -> None:
    """Our own generator (not the shared sample), small: 8 leaks, 7 spikes, 4 lookalikes, replayed
    through `keywatch backtest`'s engine."""
    from datetime import datetime

    import orjson

    from alerts.offline.backtest import read_input, run_backtest
    from monitor.secret import Secret
    from monitor.settings import ProviderSettings, Response, Settings
    from tests.alerts.scenarios import generate

    sc = generate(seed=21, clean=6)
    policies = tuple(TokenPolicy(match=k, business_hours=v) for k, v in sc.business_hours.items())
    provider = ProviderSettings(
        name="sc",  # the provider the generated lines name: its 900 s poll interval applies
        kind="laozhang",
        base_url="http://x.invalid",
        admin_token=Secret(""),
        poll_interval=900,
    )
    settings = Settings(providers=(provider,), tokens=policies, response=Response(auto_revoke=True))
    alerts = await run_backtest(read_input([orjson.dumps(line) for line in sc.lines]), settings)
    events: dict[str, dict[str, object]] = sc.truth["events"]  # type: ignore[assignment]

    def ts(v: object) -> float:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()

    def caught(tok: str, rules: set[str]) -> bool:
        e = events[tok]
        on, hours = ts(e["onset"]), float(e["hours"])  # type: ignore[arg-type]
        return any(
            a["token"] == tok
            and a["state"] == "firing"
            and a["rule"] in rules
            and on <= ts(a["ts"]) <= on + (hours + 1) * HOUR
            for a in alerts
        )

    leaks = [t for t, e in events.items() if e["type"] == "leak"]
    spikes = [t for t, e in events.items() if e["type"] == "spike"]
    assert all(caught(t, {"leak_suspected"}) for t in leaks)
    assert sum(caught(t, {"spend_anomaly", "leak_suspected"}) for t in spikes) >= len(spikes) - 1
    quarantines = [a for a in alerts if a["action"] == "quarantine"]
    assert all(
        a["token"] in leaks and ts(a["ts"]) >= ts(events[str(a["token"])]["onset"]) for a in quarantines
    )


def test_at_60_second_polls_a_batch_starting_on_the_hour_is_still_familiar() -> None:
    """The 20:00:00 delta belongs to the 19:00 hour: the episode must include it, or its (usual)
    IPs would look absent and off-hours would count."""
    f: Feeder[LeakResult] = Feeder(office(200, 1), seed=5, ips=IPS, dispersion=12)
    f.run(15 * DAY + 20 * HOUR - STEP)
    f.run(STEP, extra=attacker(f, 1500, ("m-mini",), IPS))  # the batch's first delta, stamped 20:00
    r = DETECTOR.evaluate(f.history, f.now + 60, BUSINESS, None, FLEET)
    assert "spike" in r.names and not r.fire
