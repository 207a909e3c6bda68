"""Typed settings: what `monitor.config` produces from a validated YAML file (DESIGN §3.2).

Durations are seconds (float). Paths are already resolved against the config file's folder.
Everything is frozen: a reload builds a new Settings and swaps it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from monitor.model import ProviderKind
from monitor.secret import Secret


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: ProviderKind
    base_url: str
    admin_token: Secret
    poll_interval: float = 60.0
    timeout: float = 10.0
    user_id: int | None = None  # newapi: New-Api-User
    project_id: str | None = None  # openai
    keys: dict[str, Secret] = field(default_factory=dict)  # token name -> key (laozhang per-key usage)
    concurrency: int = 32  # parallel per-key usage calls
    retries: int = 3  # extra tries for 5xx, timeouts, 429
    timezone: str = "UTC"  # where the relay's day and month usage figures reset
    quota_per_unit: float = 500_000.0  # oneapi/newapi: quota per USD
    reveal_keys: bool = False  # oneapi/newapi: reveal masked keys to hash them
    action: Literal["disable", "delete"] | None = None  # per-provider override of response.action
    poll_timeout: float | None = None  # a whole poll's deadline; None: max(poll_interval, 60 s)
    max_response_mb: int = 64  # the largest answer read, raw or decoded
    max_pages: int = 20_000  # pages of one list walk (one-api: 10 a page)

    @property
    def poll_deadline(self) -> float:
        return self.poll_timeout if self.poll_timeout is not None else max(self.poll_interval, 60.0)


@dataclass(frozen=True, slots=True)
class Budget:
    daily_usd: float | None = None
    monthly_usd: float | None = None


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    match: str  # glob on the token name
    budget: Budget = field(default_factory=Budget)
    protected: bool = False
    business_hours: str | None = None  # "mon-fri 08:00-20:00 Europe/Berlin"


@dataclass(frozen=True, slots=True)
class BudgetRule:
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ForecastRule:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    enabled: bool = True
    sensitivity: float = 4.0
    min_impact_usd: float = 1.0
    min_impact_pct: float = 100.0
    min_requests: int = 10
    for_polls: int = 2  # YAML key `for`
    keep_firing_for: float = 3600.0  # an anomaly stays firing this long after it clears (no flapping)


@dataclass(frozen=True, slots=True)
class LeakRule:
    enabled: bool = True
    for_polls: int = 1  # YAML key `for`


@dataclass(frozen=True, slots=True)
class Rules:
    budget: BudgetRule = field(default_factory=BudgetRule)
    forecast: ForecastRule = field(default_factory=ForecastRule)
    anomaly: AnomalyRule = field(default_factory=AnomalyRule)
    leak: LeakRule = field(default_factory=LeakRule)
    expiry_warn_before: float = 14 * 86400.0  # YAML rules.expiry.warn_before
    unused_after: float = 30 * 86400.0  # YAML rules.unused.after
    rotation_prod: float = 90 * 86400.0  # YAML rules.rotation.prod
    rotation_default: float = 180 * 86400.0  # YAML rules.rotation.default
    provider_down_after: int = 3  # failed polls in a row before provider_down fires


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    url: Secret  # Apprise URLs carry credentials
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Notify:
    urls: tuple[NotifyTarget, ...] = ()
    apprise_config: str | None = None
    routes: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "critical": ("critical",),
            "warning": ("warning",),
            "info": ("info",),
            "security": ("security", "critical"),
        }
    )
    group_by: tuple[str, ...] = ("provider", "token")
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    send_resolved: bool = True
    grafana_url: str = ""


@dataclass(frozen=True, slots=True)
class Response:
    auto_revoke: bool = False
    dry_run: bool = False
    action: Literal["disable", "delete"] = "disable"
    max_per_hour: int = 3
    protect: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeakReports:
    hmac_secret: Secret = field(default_factory=lambda: Secret(""))
    github_public_keys: str | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    raw: float = 14 * 86400.0
    hourly: float = 400 * 86400.0


@dataclass(frozen=True, slots=True)
class Settings:
    database: str = "sqlite:///keywatch.db"
    listen: str = "127.0.0.1:9477"
    api_token: Secret = field(default_factory=lambda: Secret(""))
    providers: tuple[ProviderSettings, ...] = ()
    tokens: tuple[TokenPolicy, ...] = ()
    rules: Rules = field(default_factory=Rules)
    notify: Notify = field(default_factory=Notify)
    response: Response = field(default_factory=Response)
    leak_reports: LeakReports = field(default_factory=LeakReports)
    retention: Retention = field(default_factory=Retention)
    source: str | None = None  # the file it came from, for messages
