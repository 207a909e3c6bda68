"""Typed settings, and the one description of every config key (docs/config.md).

Each field is a key of the YAML file (`monitor.config` reads it): its type, default, description and
bounds are declared here once; pydantic validates YAML into these dataclasses, and the JSON Schema
(`keywatch config schema`) and docs/config.md are generated from them. Code builds them directly, as
plain dataclasses, without validation.

Durations are seconds (float). Paths are already resolved against the config file's folder.
Everything is frozen: a reload builds a new Settings and swaps it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

from monitor.config_fields import (
    NOT_A_KEY,
    AppriseUrl,
    Bounds,
    BusinessHoursText,
    DatabaseUrl,
    Duration,
    HttpUrl,
    Listen,
    Matches,
    NonEmpty,
    ReadableFile,
    Routes,
    Section,
    SortedSet,
    Tag,
    TimeZone,
    Unique,
    key,
)
from monitor.model import ProviderKind
from monitor.secret import Secret

_DAY: Final = 86_400.0
Action = Literal["disable", "delete"]
DEFAULT_ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "critical": ("critical",),
    "warning": ("warning",),
    "info": ("info",),
    "security": ("security", "critical"),
}


@dataclass(frozen=True, slots=True)
class ProviderSettings(Section):
    """A relay (or key platform) to watch. Its secrets may be given as `<key>_file: path` instead."""

    name: Annotated[
        str, Matches(r"[a-z0-9_-]+", "invalid provider name '{}' (use a-z, 0-9, '_' and '-')")
    ] = field(
        metadata=key("Unique name of the relay, [a-z0-9_-]+; the `provider` label of its metrics and alerts.")
    )
    kind: ProviderKind = field(
        metadata=key(
            "What the relay runs: laozhang | oneapi | newapi | openai | litellm | openrouter | anthropic."
        )
    )
    base_url: Annotated[str, HttpUrl()] = field(
        metadata=key("The relay's http(s) root, e.g. https://relay.example.com (no user or password in it).")
    )
    admin_token: Secret = field(
        metadata=key(
            "The admin (one-api/new-api: access) token the relay's admin API takes; required, or"
            " `admin_token_file`."
        )
    )
    poll_interval: Annotated[float, Duration(most=_DAY)] = field(
        default=60.0, metadata=key("How often to poll the relay (also the backtest's step), at most 1d.")
    )
    timeout: Annotated[float, Duration(most=600.0)] = field(
        default=10.0, metadata=key("Deadline of one HTTP request, connect to last byte, at most 10m.")
    )
    user_id: int | None = field(
        default=None,
        metadata=key("newapi (required there): the New-Api-User header, the admin's user id.", ge=1),
    )
    project_id: str | None = field(
        default=None, metadata=key("openai (required there): the project whose keys to watch.")
    )
    keys: dict[str, Secret] = field(
        default_factory=dict,
        metadata=key(
            "Token name -> key, for the calls only a token's own key may make (laozhang: GET /v1/usage)."
            " `<token name>_file: path` reads a key from a file. keywatch stores only their SHA-256."
        ),
    )
    concurrency: int = field(default=32, metadata=key("Parallel per-key usage calls.", ge=1, le=512))
    retries: int = field(
        default=3, metadata=key("Extra tries on 5xx, timeouts and 429 (honouring Retry-After).", ge=0, le=10)
    )
    timezone: Annotated[str, TimeZone()] = field(
        default="UTC", metadata=key("IANA time zone where the relay's day and month usage figures reset.")
    )
    quota_per_unit: float = field(
        default=500_000.0,
        metadata=key("oneapi/newapi: quota units per USD (the relay's QuotaPerUnit).", gt=0),
    )
    reveal_keys: bool = field(
        default=False,
        metadata=key("oneapi/newapi: reveal masked keys to hash them (matches leak reports to tokens)."),
    )
    action: Action | None = field(
        default=None, metadata=key("How this relay's tokens are quarantined, overriding `response.action`.")
    )
    poll_timeout: Annotated[float, Duration(most=_DAY)] | None = field(
        default=None, metadata=key("Deadline of a whole poll; unset: max(poll_interval, 60s).")
    )
    max_response_mb: int = field(
        default=64, metadata=key("The largest relay answer read, raw or decompressed, in MB.", ge=1, le=4096)
    )
    max_pages: int = field(
        default=20_000,
        metadata=key("Pages of one list walk (one-api: 10 tokens a page).", ge=1, le=10_000_000),
    )

    @property
    def poll_deadline(self) -> float:
        return self.poll_timeout if self.poll_timeout is not None else max(self.poll_interval, 60.0)


@dataclass(frozen=True, slots=True)
class Budget(Section):
    """Spend limits in USD; where none is set, the token's own limits at the relay count."""

    daily_usd: float | None = field(default=None, metadata=key("USD a day (the relay's day).", ge=0))
    monthly_usd: float | None = field(default=None, metadata=key("USD a calendar month.", ge=0))


@dataclass(frozen=True, slots=True)
class TokenPolicy(Section):
    """Budget, protection and business hours of the tokens a policy matches."""

    match: Annotated[str, NonEmpty()] = field(
        metadata=key('Glob on the token name, e.g. "prod-*"; required.')
    )
    budget: Budget = field(default_factory=Budget)
    protected: bool = field(default=False, metadata=key("Never quarantined automatically."))
    business_hours: Annotated[str, BusinessHoursText()] | None = field(
        default=None,
        metadata=key(
            "When the token is normally used: days (mon-fri, sat-sun, mon,wed,fri) HH:MM-HH:MM IANA zone;"
            " use outside them is leak evidence."
        ),
    )


@dataclass(frozen=True, slots=True)
class BudgetRule(Section):
    """`budget`: a token's day or month spend passes a threshold of its budget."""

    thresholds: Annotated[
        tuple[Annotated[float, Bounds(gt=0, le=10)], ...],
        SortedSet("give at least one threshold (or set enabled: false)"),
    ] = field(
        default=(0.5, 0.8, 1.0),
        metadata=key(
            "Fractions of the budget, each in (0, 10]; each fires once per budget period.", strict=False
        ),
    )
    enabled: bool = field(default=True, metadata=key("Evaluate the rule."))


@dataclass(frozen=True, slots=True)
class ForecastRule(Section):
    """`budget_forecast`: the month-to-date rate crosses the monthly budget before the month ends."""

    enabled: bool = field(default=True, metadata=key("Evaluate the rule."))


@dataclass(frozen=True, slots=True)
class AnomalyRule(Section):
    """`spend_anomaly`: a token spends far above its own pattern."""

    enabled: bool = field(default=True, metadata=key("Evaluate the rule."))
    sensitivity: float = field(default=4.0, metadata=key("Score a spike must pass; higher fires less.", gt=0))
    min_impact_usd: float = field(
        default=1.0, metadata=key("Ignore spikes smaller than this many USD ...", ge=0)
    )
    min_impact_pct: float = field(default=100.0, metadata=key("... or than this % over the usual.", ge=0))
    min_requests: int = field(
        default=10, metadata=key("Ignore tokens with fewer requests in the window.", ge=0)
    )
    for_polls: int = field(default=2, metadata=key("Polls in a row before it fires.", alias="for", ge=1))
    keep_firing_for: Annotated[float, Duration(positive=False)] = field(
        default=3600.0, metadata=key("An anomaly stays firing this long after it clears (no flapping).")
    )


@dataclass(frozen=True, slots=True)
class LeakRule(Section):
    """`leak_suspected`: a spike or a dormant token waking up, with at least one more signal (docs/detection.md)."""

    enabled: bool = field(default=True, metadata=key("Evaluate the rule."))
    for_polls: int = field(default=1, metadata=key("Polls in a row before it fires.", alias="for", ge=1))


@dataclass(frozen=True, slots=True)
class Rules(Section):
    """The alert rules, evaluated after every poll."""

    budget: BudgetRule = field(default_factory=BudgetRule)
    forecast: ForecastRule = field(default_factory=ForecastRule)
    anomaly: AnomalyRule = field(default_factory=AnomalyRule)
    leak: LeakRule = field(default_factory=LeakRule)
    expiry_warn_before: Annotated[float, Duration(positive=False)] = field(
        default=14 * _DAY,
        metadata=key(
            "`token_expiring` fires this long before a token expires.",
            yaml=("expiry", "warn_before"),
            section="`token_expiring`: a token expires soon.",
        ),
    )
    unused_after: Annotated[float, Duration()] = field(
        default=30 * _DAY,
        metadata=key(
            "`token_unused` fires for a token unused (or never used) this long.",
            yaml=("unused", "after"),
            section="`token_unused`: a token nobody uses.",
        ),
    )
    rotation_prod: Annotated[float, Duration()] = field(
        default=90 * _DAY,
        metadata=key(
            "Age at which a prod token is due for rotation.",
            yaml=("rotation", "prod"),
            section="`rotation_due`: a token older than its rotation age.",
        ),
    )
    rotation_default: Annotated[float, Duration()] = field(
        default=180 * _DAY,
        metadata=key("Age at which any other token is due for rotation.", yaml=("rotation", "default")),
    )
    provider_down_after: int = field(
        default=3,
        metadata=key(
            "Failed polls in a row before `provider_down` fires.",
            yaml=("provider_down", "after"),
            section="`provider_down`: a relay that keeps failing.",
            ge=1,
        ),
    )


@dataclass(frozen=True, slots=True)
class NotifyTarget(Section):
    """An Apprise URL with tags; a bare URL is a target without tags."""

    url: Annotated[Secret, AppriseUrl()] = field(
        metadata=key(
            "Apprise URL (https://github.com/caronc/apprise/wiki), e.g. mailto://user:pass@smtp.example.com?to=ops@example.com;"
            " empty (an unset `${VAR:-}`) is no target."
        )
    )
    tags: Annotated[tuple[Annotated[str, Tag()], ...], Unique()] = field(
        default=(), metadata=key("Tags that routes send to (letters, digits, '_' and '-').", strict=False)
    )


@dataclass(frozen=True, slots=True)
class Notify(Section):
    """Where alerts go (Apprise). With no targets at all, alerts are only logged; with targets, a routed
    tag that matches none of them is an error."""

    urls: tuple[NotifyTarget, ...] = field(default=(), metadata=key("Notification targets.", strict=False))
    apprise_config: Annotated[str, ReadableFile()] | None = field(
        default=None,
        metadata=key("An Apprise YAML/TEXT config file; its targets' tags count for the routes too."),
    )
    routes: Annotated[
        dict[str, tuple[str, ...]],
        Routes(
            DEFAULT_ROUTES,
            {
                "critical": "Tags critical alerts go to.",
                "warning": "Tags warnings go to.",
                "info": "Tags info notices go to.",
                "security": "Tags security alerts (leaks) go to.",
            },
        ),
    ] = field(
        default_factory=lambda: dict(DEFAULT_ROUTES),
        metadata=key("Which tags each severity goes to; [] logs only."),
    )
    group_by: tuple[Annotated[str, NonEmpty()], ...] = field(
        default=("provider", "token"),
        metadata=key("Alert labels that group alerts into one notification.", strict=False),
    )
    group_wait: Annotated[float, Duration(positive=False)] = field(
        default=30.0, metadata=key("Wait before the first notification of a group, to batch what follows.")
    )
    group_interval: Annotated[float, Duration()] = field(
        default=300.0, metadata=key("Wait before notifying about changes in a group (and the retry cap).")
    )
    repeat_interval: Annotated[float, Duration()] = field(
        default=4 * 3600.0, metadata=key("Resend an unchanged, still firing group this often.")
    )
    send_resolved: bool = field(default=True, metadata=key("Notify when alerts resolve."))
    grafana_url: Annotated[str, HttpUrl(optional=True)] = field(
        default="", metadata=key("Grafana dashboard URL for links in notifications; empty: no links.")
    )


@dataclass(frozen=True, slots=True)
class Response(Section):
    """Quarantine of tokens judged leaked: automatic (off by default) or by `keywatch revoke`."""

    auto_revoke: bool = field(
        default=False, metadata=key("Quarantine leaked tokens automatically (`demo` turns it on).")
    )
    dry_run: bool = field(default=False, metadata=key("Only say what would be done."))
    action: Action = field(
        default="disable", metadata=key("disable | delete (delete is for good and needs this explicit line).")
    )
    max_per_hour: int = field(
        default=3,
        metadata=key("Automatic quarantines an hour; beyond it keywatch stops and alerts a human.", ge=0),
    )
    protect: tuple[Annotated[str, NonEmpty()], ...] = field(
        default=(), metadata=key("Globs on token names never quarantined automatically.", strict=False)
    )


@dataclass(frozen=True, slots=True)
class LeakReports(Section):
    """External leak reports (GitHub secret scanning, your own tools): POST /api/v1/leak-reports."""

    hmac_secret: Secret = field(
        default_factory=lambda: Secret(""),
        metadata=key("Shared secret of X-Keywatch-Signature: sha256=<hex>; empty: reports are refused."),
    )
    github_public_keys: Annotated[str, ReadableFile()] | None = field(
        default=None, metadata=key("PEM file of GitHub's secret-scanning keys, to verify its signatures.")
    )


@dataclass(frozen=True, slots=True)
class Retention(Section):
    """How long stored history is kept."""

    raw: Annotated[float, Duration()] = field(
        default=14 * _DAY, metadata=key("Raw usage rows and request logs.")
    )
    hourly: Annotated[float, Duration()] = field(default=400 * _DAY, metadata=key("Hourly rollups."))


@dataclass(frozen=True, slots=True)
class Cluster(Section):
    """Several instances sharing one PostgreSQL database (docs/scaling.md); ignored on SQLite."""

    instance: Annotated[str, Matches(r"[A-Za-z0-9_.:-]{0,100}", "{!r}: letters, digits and _.:- only")] = (
        field(
            default="",
            metadata=key(
                "This instance's name, unique among those sharing the database; empty: host name and process id."
            ),
        )
    )
    lease: Annotated[float, Duration()] = field(
        default=30.0,
        metadata=key(
            "How long a provider stays with an instance that stopped renewing it (renewed every third of it)."
            " Failover takes about this long; keep it below the shortest poll_interval.",
            ge=3,
            le=3600,
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings(Section):
    """keywatch's config file. `${VAR}` and `${VAR:-default}` are replaced from the environment; secrets
    may be read from files (`<key>_file: path`); relative paths are relative to the config file."""

    database: Annotated[str, DatabaseUrl()] = field(
        default="sqlite:///keywatch.db",
        metadata=key(
            "SQLAlchemy URL of the history: SQLite (a relative file sits next to the config) or"
            " postgresql+psycopg://user@host/db.",
            validate_default=True,  # the default file, too, sits next to the config
        ),
    )
    listen: Annotated[str, Listen()] = field(
        default="127.0.0.1:9477", metadata=key("HOST:PORT of /metrics, /healthz, /readyz and /api/v1/...")
    )
    api_token: Secret = field(
        default_factory=lambda: Secret(""),
        metadata=key(
            'If set, /api/v1/* needs "Authorization: Bearer <it>"; else changes only from loopback.'
        ),
    )
    providers: tuple[ProviderSettings, ...] = field(
        default=(), metadata=key("The relays to watch; at least one.", strict=False)
    )
    tokens: tuple[TokenPolicy, ...] = field(
        default=(),
        metadata=key("Token policies; the first whose `match` globs the token name wins.", strict=False),
    )
    rules: Rules = field(default_factory=Rules)
    notify: Notify = field(default_factory=Notify)
    response: Response = field(default_factory=Response)
    leak_reports: LeakReports = field(default_factory=LeakReports)
    retention: Retention = field(default_factory=Retention)
    cluster: Cluster = field(default_factory=Cluster)
    source: str | None = field(default=None, metadata=NOT_A_KEY)  # the file it came from, for messages
