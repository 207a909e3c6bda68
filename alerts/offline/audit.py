"""The token hygiene audit: the product guide's weekly, monthly and quarterly audits
as one report — `keywatch audit [--json]` and the daemon's weekly digest (tag `audit`).

The time-based findings (`unused`, `rotation_due`, `expiring`) use the very predicates and
thresholds of the `token_unused`, `rotation_due` and `token_expiring` rules (alerts.detection.rules), so the
report and the alerts never disagree. The others check what the guide asks of a token's setup:
an expiry on temporary tokens, the naming convention, an IP whitelist on production tokens, a
budget or limit, and no keys left in the config for tokens that are gone.

Which tokens each finding looks at:
- `unused`, `rotation_due`, `expiring`: live tokens only (status active or unused), as the rules.
- `no_expiry`, `naming`, `no_ip_whitelist`, `no_limits`: every token that could still be used
  (or be re-enabled) — not revoked, deleted or expired ones.
- `revoked_key_configured`: revoked, expired, deleted or disabled tokens whose name still has an
  entry in its provider's `providers[].keys`.

A token is *temporary* when its name says so:
- names on the convention: env is one of tmp, temp, test, demo, poc, trial; or a word of the
  purpose (split on `-` and `_`) is tmp, temp, temporary, trial(s), poc(s), demo(s),
  experiment(s) or experimental, optionally followed by digits (`poc2`). Whole words, not
  substrings, so `template`, `industrial` or `epoch` do not count. The project part is not read:
  `prod-demo-api-2026-01` is the production token of a project called demo.
- other names: any word of the name (split on anything but letters and digits) that is one of
  the env words or purpose words above.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alerts.detection.rules import expires_in, is_live, rotation_limit, rotation_overdue, unused_for
from alerts.model import Severity
from monitor.policy import PolicyBook
from monitor.settings import ProviderSettings, Settings
from monitor.tokens import TokenState, naming_labels

__all__ = [
    "ADVICE",
    "DIGEST_INTERVAL",
    "DIGEST_TAG",
    "FINDINGS",
    "TEMPORARY_ENVS",
    "AuditFinding",
    "DigestSchedule",
    "audit",
    "digest_notify_type",
    "naming_problem",
    "render_digest",
    "temporary_hint",
]

DAY = 86400.0
DIGEST_TAG = "audit"
DIGEST_INTERVAL = 7 * DAY

# Every finding id, in display order: what to act on first comes first.
FINDINGS: tuple[str, ...] = (
    "expiring",
    "no_ip_whitelist",
    "no_limits",
    "revoked_key_configured",
    "rotation_due",
    "no_expiry",
    "unused",
    "naming",
)
_RANK = {f: i for i, f in enumerate(FINDINGS)}
_SEVERITY: Mapping[str, Severity] = {
    "expiring": "warning",
    "no_ip_whitelist": "warning",
    "no_limits": "warning",
    "revoked_key_configured": "warning",
    "rotation_due": "info",
    "no_expiry": "info",
    "unused": "info",
    "naming": "info",
}

# The product guide's advice, one line per finding (the digest prints it under each heading).
ADVICE: Mapping[str, str] = {
    "expiring": "Create the replacement token and roll it out before the old one expires.",
    "no_ip_whitelist": "Restrict production tokens to your servers' addresses with an IP whitelist.",
    "no_limits": "Give every token a budget: per environment, e.g. dev $10/month, test $50, prod $500 "
    "(tokens[].budget in keywatch.yaml, or limits at the relay).",
    "revoked_key_configured": "Remove the dead token's key from providers[].keys and from your secret store; "
    "make sure the applications use its replacement.",
    "rotation_due": "Rotate production tokens every 3 months and development tokens every 6: create a "
    "replacement, update the applications, then revoke the old token.",
    "no_expiry": "Give temporary tokens an expiry date so they cannot outlive their purpose.",
    "unused": "Revoke tokens nobody uses: an unused token is only a liability.",
    "naming": "Name tokens [env]-[project]-[purpose]-[date], e.g. prod-webapp-api-2024-01.",
}

_RETIRED = frozenset({"revoked", "deleted", "expired"})  # cannot come back: only their keys matter
_DEAD = frozenset({"revoked", "expired", "deleted", "disabled"})  # a configured key for these is stale
_NO_IP_WHITELIST_KINDS = frozenset({"openai"})  # OpenAI API keys have no per-key IP allowlist

TEMPORARY_ENVS = frozenset({"tmp", "temp", "test", "demo", "poc", "trial"})
_TEMPORARY_WORD = re.compile(r"(?:te?mp|temporary|trials?|pocs?|demos?|experiments?|experimental)\d*")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}$")
_NAME_CHARS = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class AuditFinding:
    """One hygiene problem of one token. `finding` is one of FINDINGS; `detail` says it for humans."""

    token: str
    provider: str
    finding: str
    detail: str

    @property
    def severity(self) -> Severity:
        return _SEVERITY.get(self.finding, "info")

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Display order: by finding (FINDINGS order), then provider and token."""
        return (_RANK.get(self.finding, len(FINDINGS)), self.provider, self.token)

    def to_json(self) -> dict[str, str]:
        """The `audit --json` object: exactly token, provider, finding, detail."""
        return {
            "token": self.token,
            "provider": self.provider,
            "finding": self.finding,
            "detail": self.detail,
        }


def audit(
    states: Iterable[TokenState], settings: Settings, policies: PolicyBook, *, now: float
) -> list[AuditFinding]:
    """Every hygiene finding for `states`, in display order (see AuditFinding.sort_key)."""
    providers = {p.name: p for p in settings.providers}
    found = [
        AuditFinding(s.name, s.provider, finding, detail)
        for s in states
        for finding, detail in _check(s, providers.get(s.provider), settings, policies, now)
    ]
    found.sort(key=lambda f: f.sort_key)
    return found


def _check(
    s: TokenState, provider: ProviderSettings | None, settings: Settings, policies: PolicyBook, now: float
) -> Iterator[tuple[str, str]]:
    """(finding, detail) for one token."""
    if s.status in _DEAD and provider is not None and s.name in provider.keys:
        yield (
            "revoked_key_configured",
            f"status {s.status}, but providers[{s.provider}].keys still holds a key for it",
        )
    if s.status in _RETIRED:
        return
    rules = settings.rules
    if is_live(s):  # the time-based checks: exactly the rules' conditions
        idle = unused_for(s, rules, now=now)
        if idle is not None:
            yield "unused", _unused_detail(s, idle)
        age = rotation_overdue(s, rules, now=now)
        if age is not None and s.created_at is not None:
            who = "prod tokens" if s.env == "prod" else "tokens outside prod"
            limit = _days(rotation_limit(s, rules))
            yield (
                "rotation_due",
                f"created {_date(s.created_at)}, {_days(age)} ago; {who} rotate every {limit}",
            )
        left = expires_in(s, rules, now=now)
        if left is not None and s.expires_at is not None:
            yield "expiring", f"expires {_when(s.expires_at)}, in {_span(left)}"
    hint = temporary_hint(s.name)
    if hint is not None and s.expires_at is None:
        yield "no_expiry", f"temporary by its name ({hint}) but never expires"
    problem = naming_problem(s.name)
    if problem is not None:
        yield "naming", f"{s.name!r} is off the [env]-[project]-[purpose]-[YYYY-MM] convention: {problem}"
    if s.env == "prod" and not s.ip_whitelist and _kind(provider) not in _NO_IP_WHITELIST_KINDS:
        yield "no_ip_whitelist", "production token with no IP whitelist: anyone holding the key can use it"
    if not _limited(s, policies):
        yield "no_limits", _no_limits_detail(s, policies, provider)


# -- the checks -------------------------------------------------------------------------------


def temporary_hint(name: str) -> str | None:
    """Why `name` reads as a temporary token ("env 'test'", "purpose 'poc-search'", "the word
    'demo'"), or None. The heuristic is described in the module docstring."""
    labels = naming_labels(name)
    if labels is not None:
        env, project = labels
        if env in TEMPORARY_ENVS:
            return f"env {env!r}"
        # naming_labels matched [env]-[project]-[purpose]-[YYYY-MM]: the purpose is what lies
        # between "env-project-" and the 8-character "-YYYY-MM".
        purpose = name.lower()[len(env) + len(project) + 2 : -8]
        if any(_TEMPORARY_WORD.fullmatch(w) for w in re.split(r"[-_]", purpose)):
            return f"purpose {purpose!r}"
        return None
    for word in re.split(r"[^a-z0-9]+", name.lower()):
        if word in TEMPORARY_ENVS or _TEMPORARY_WORD.fullmatch(word):
            return f"the word {word!r}"
    return None


def naming_problem(name: str) -> str | None:
    """What keeps `name` off the naming convention, or None when it follows it."""
    if naming_labels(name) is not None:
        return None
    lower = name.lower()
    if not _DATE_SUFFIX.search(lower):
        return "it does not end in a -YYYY-MM date"
    if not _NAME_CHARS.fullmatch(lower):
        return "use only letters, digits, '-' and '_'"
    parts = lower[:-8].split("-")
    if len(parts) < 3 or not all(parts):
        return "it needs an env, a project and a purpose before the date"
    if "_" in parts[0] or "_" in parts[1]:
        return "env and project take letters and digits only"
    return "it does not match the pattern"


def _limited(s: TokenState, policies: PolicyBook) -> bool:
    """A budget from config or a limit at the relay: daily/monthly amount, daily requests, or a
    finite one-api/new-api quota."""
    budgets = policies.budgets(s)  # config first, else the relay's daily/monthly amounts
    limits = s.limits
    return bool(
        (budgets.day is not None and budgets.day > 0)
        or (budgets.month is not None and budgets.month > 0)
        or (limits.daily_requests is not None and limits.daily_requests > 0)
        or (limits.remain_usd is not None and not limits.unlimited)
    )


def _no_limits_detail(s: TokenState, policies: PolicyBook, provider: ProviderSettings | None) -> str:
    if _kind(provider) == "openai":
        relay = "OpenAI keys carry no spending limit"
    elif s.limits.unlimited:
        relay = "unlimited quota at the relay"
    else:
        relay = "no daily or monthly limit at the relay"
    policy = policies.policy_for(s.name)
    config = (
        "no tokens[] policy in the config matches it"
        if policy is None
        else f"its policy {policy.match!r} sets no budget"
    )
    return f"{relay} and {config}"


def _unused_detail(s: TokenState, idle: float) -> str:
    if s.last_used_at is not None:
        return f"last used {_days(idle)} ago ({_date(s.last_used_at)})"
    created = f"{_date(s.created_at)}, " if s.created_at is not None else ""
    return f"never used; created {created}{_days(idle)} ago"


def _kind(provider: ProviderSettings | None) -> str:
    return provider.kind if provider is not None else ""


# -- the weekly digest ------------------------------------------------------------------------


def render_digest(findings: Sequence[AuditFinding], *, now: float, limit: int = 10) -> tuple[str, str]:
    """The weekly digest notification (send it to tag DIGEST_TAG): counts by finding, then per
    finding its advice and tokens, at most `limit` each ("... and N more")."""
    ordered = sorted(findings, key=lambda f: f.sort_key)
    tokens = len({(f.provider, f.token) for f in ordered})
    if not ordered:
        title = "keywatch audit: no findings"
        return title, f"Token hygiene audit, {_when(now)}: no findings. Every token passes the checks."
    title = f"keywatch audit: {_count(len(ordered), 'finding')} on {_count(tokens, 'token')}"
    counts = Counter(f.finding for f in ordered)
    kinds = sorted(counts, key=lambda k: _RANK.get(k, len(FINDINGS)))
    width = max(len(k) for k in kinds)
    lines = [
        f"Token hygiene audit, {_when(now)}: {_count(len(ordered), 'finding')} on {_count(tokens, 'token')}.",
        "",
    ]
    lines += [f"  {k:<{width}}  {counts[k]}" for k in kinds]
    for kind in kinds:
        group = [f for f in ordered if f.finding == kind]
        lines += ["", f"{kind} ({len(group)}): {ADVICE.get(kind, '')}".rstrip()]
        lines += [f"  * {f.provider}/{f.token}: {f.detail}" for f in group[:limit]]
        if len(group) > limit:
            lines.append(f"  ... and {len(group) - limit} more")
    lines += ["", "The full list: `keywatch audit` (or `keywatch audit --json`)."]
    return title, "\n".join(lines)


def digest_notify_type(findings: Sequence[AuditFinding]) -> str:
    """Apprise NotifyType for the digest: warning when any finding is a warning, else info."""
    return "warning" if any(f.severity == "warning" for f in findings) else "info"


_METADATA = sa.MetaData()
_audit_digest = sa.Table(
    "audit_digest",
    _METADATA,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("sent_at", sa.Float, nullable=False),
)


class DigestSchedule:
    """When the digest is due: never sent, or last sent `every` seconds ago or more. The time of
    the last send is one row of `audit_digest` in keywatch's database, so a restart neither
    repeats a digest nor skips one. Call save(now) after the digest went out."""

    def __init__(self, engine: Engine, *, every: float = DIGEST_INTERVAL, name: str = "weekly") -> None:
        self._engine = engine
        self.every = every
        self._name = name

    def load(self) -> float | None:
        """When the digest was last sent (epoch seconds), or None if never."""
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(_audit_digest.c.sent_at).where(_audit_digest.c.name == self._name)
            ).scalar_one_or_none()
        return None if value is None else float(value)

    def save(self, sent_at: float) -> None:
        with self._engine.begin() as conn:
            done = conn.execute(
                _audit_digest.update().where(_audit_digest.c.name == self._name).values(sent_at=sent_at)
            )
            if done.rowcount == 0:
                conn.execute(_audit_digest.insert().values(name=self._name, sent_at=sent_at))

    def next_due(self) -> float | None:
        """When the next digest is due; None means now (never sent)."""
        last = self.load()
        return None if last is None else last + self.every

    def due(self, now: float) -> bool:
        next_at = self.next_due()
        return next_at is None or now >= next_at


# -- formatting -------------------------------------------------------------------------------


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _days(seconds: float) -> str:
    return _count(int(seconds // DAY), "day")


def _span(seconds: float) -> str:
    """A time ahead: whole days from one day on, else hours."""
    if seconds >= DAY:
        return _days(seconds)
    hours = int(seconds // 3600)
    return _count(hours, "hour") if hours else "less than an hour"
