"""HTML of every console page. Every value goes through `e` (html.escape) on its way in; the
pages are plain semantic HTML: a <main>, headings, tables with captions, labelled forms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from console.data import AuditRow, ProviderView, TokenView
from console.fmt import ago, money, pct, when
from monitor.model import severity_rank

__all__ = [
    "Access",
    "Form",
    "alerts_page",
    "audit_page",
    "confirm_page",
    "e",
    "layout",
    "login_page",
    "message_page",
    "overview_page",
    "silences_page",
    "token_page",
    "token_url",
    "tokens_page",
]

NAV = (
    ("/", "Overview"),
    ("/tokens", "Tokens"),
    ("/alerts", "Alerts"),
    ("/silences", "Silences"),
    ("/audit", "Audit"),
)


OVERVIEW_ALERTS = 20  # firing alerts on the overview; /alerts has them all
GROUPS_PER_PAGE = 50
AUDIT_FINDINGS = 200
_CURRENT = ' aria-current="page"'
_NUM = ' class="num"'
_DANGER = ' class="danger"'


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Access:
    """Whether this visitor may change anything, and if not, why (shown on the page)."""

    can_act: bool
    why_not: str = ""
    csrf: str = ""


@dataclass(frozen=True, slots=True)
class Form:
    """A confirmation: what it does, in words, and the hidden fields it posts back."""

    action: str
    title: str
    statement: str
    button: str
    fields: Mapping[str, str]
    danger: bool = False
    reason: bool = True  # ask for a reason (kept in the audit trail)
    back: str = "/"  # where Cancel goes


def token_url(provider: str, name: str, action: str = "") -> str:
    base = "/tokens" if not action else f"/actions/{action}"
    return f"{base}/{quote(provider, safe='')}/{quote(name, safe='')}"


def layout(title: str, body: str, *, current: str = "") -> str:
    links = "".join(
        f'<li><a href="{href}"{_CURRENT if href == current else ""}>{e(label)}</a></li>'
        for href, label in NAV
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)} · keywatch</title><link rel="stylesheet" href="/static/console.css"></head>'
        f'<body><header><a class="brand" href="/">keywatch</a><nav aria-label="Main"><ul>{links}</ul></nav></header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def _table(
    caption: str, head: Sequence[str], rows: Iterable[Sequence[str]], *, nums: frozenset[int] = frozenset()
) -> str:
    """`rows` hold cells already escaped (HTML); `nums` are the right-aligned columns."""
    th = "".join(f'<th scope="col"{_NUM if i in nums else ""}>{e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{_NUM if i in nums else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(head)}" class="muted">None.</td></tr>'
    return f'<div class="table-wrap"><table><caption>{e(caption)}</caption><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _link(t: TokenView) -> str:
    return f'<a href="{e(token_url(t.provider, t.name))}">{e(t.ref)}</a>'


def _read_only(access: Access) -> str:
    return "" if access.can_act else f'<p class="notice" role="status">Read-only: {e(access.why_not)}</p>'


def _alert_rows(alerts: Sequence[Mapping[str, object]]) -> list[list[str]]:
    rows = []
    for a in alerts:
        ref = f"{a.get('provider', '')}/{a.get('token', '')}"
        token = e(ref) if ref != "/" else ""
        if a.get("token"):
            token = (
                f'<a href="{e(token_url(str(a.get("provider", "")), str(a.get("token", ""))))}">{e(ref)}</a>'
            )
        sev = str(a.get("severity", ""))
        cls = "bad" if sev in ("critical", "security") else "warn" if sev == "warning" else "muted"
        rows.append(
            [
                f'<span class="{cls}">{e(sev)}</span>',
                e(a.get("state")),
                e(a.get("rule")),
                token,
                e(a.get("summary")),
                e(a.get("since")),
            ]
        )
    return rows


_ALERT_HEAD = ("Severity", "State", "Rule", "Token", "Summary", "Since")


def quarantined_refs(trail: Sequence[AuditRow]) -> dict[tuple[str, str], AuditRow]:
    """(provider, token id) -> the quarantine in force: the newest quarantine row done (or pending
    verification) with no restore done after it (the rows come newest first)."""
    out: dict[tuple[str, str], AuditRow] = {}
    settled: set[tuple[str, str]] = set()
    for r in trail:
        key = (r.provider, r.token_id)
        if key in settled:
            continue
        if r.mode == "restore" and r.state == "done":
            settled.add(key)
        elif r.mode in ("auto", "manual", "report") and r.state in ("done", "pending_verification"):
            out[key] = r
            settled.add(key)
    return out


def overview_page(
    *,
    tokens: Sequence[TokenView],
    providers: Sequence[ProviderView],
    alerts: Sequence[Mapping[str, object]],
    quarantined: Mapping[tuple[str, str], AuditRow],
    now: float,
) -> str:
    today = sum(t.today_usd or 0.0 for t in tokens)
    month = sum(t.month_usd or 0.0 for t in tokens)
    day_budget = sum(t.budget_day_usd or 0.0 for t in tokens if t.budget_day_usd)
    month_budget = sum(t.budget_month_usd or 0.0 for t in tokens if t.budget_month_usd)
    firing = [a for a in alerts if a.get("state") == "firing"]

    def card(label: str, value: str, sub: str) -> str:
        return f'<section class="card" aria-label="{e(label)}"><h2>{e(label)}</h2><div class="big">{value}</div><div class="muted">{sub}</div></section>'

    cards = "".join(
        [
            card(
                "Spend today",
                e(money(today)),
                f"of {e(money(day_budget))} in daily budgets" if day_budget else "no daily budgets set",
            ),
            card(
                "Spend this month",
                e(money(month)),
                f"of {e(money(month_budget))} in monthly budgets"
                if month_budget
                else "no monthly budgets set",
            ),
            card("Firing alerts", e(len(firing)), f"{e(len(alerts) - len(firing))} pending"),
            card("Quarantined tokens", e(len(quarantined)), f"{e(len(tokens))} tokens watched"),
        ]
    )
    top = sorted((t for t in tokens if t.today_usd), key=lambda t: -(t.today_usd or 0.0))[:10]
    spenders = _table(
        "Top spenders today",
        ("Token", "Today", "This month", "Budget used"),
        ([_link(t), e(money(t.today_usd)), e(money(t.month_usd)), e(pct(t.budget_used_pct))] for t in top),
        nums=frozenset({1, 2, 3}),
    )
    by_key = {(t.provider, t.token_id): t for t in tokens}
    q_rows = []
    for key, row in quarantined.items():
        t = by_key.get(key)
        q_rows.append(
            [
                _link(t) if t else e(f"{row.provider}/{row.token}"),
                e(row.action),
                e(row.reason),
                e(when(row.requested_at)),
            ]
        )
    quarantine = _table("Quarantined tokens", ("Token", "Action", "Reason", "Since"), q_rows)
    health = _table(
        "Providers",
        ("Provider", "Kind", "Up", "Ready", "Last successful poll"),
        (
            [
                e(p.name),
                e(p.kind),
                '<span class="ok">up</span>' if p.up else '<span class="bad">down</span>',
                "yes" if p.ready else '<span class="warn">no</span>',
                f'<time datetime="{e(when(p.last_success))}">{e(ago(p.last_success, now))}</time>',
            ]
            for p in providers
        ),
    )
    shown = firing[:OVERVIEW_ALERTS]  # most severe first, as they come
    caption = "Firing alerts" + (
        f" (the {len(shown)} most severe of {len(firing):,})" if len(firing) > len(shown) else ""
    )
    alerts_table = _table(caption, _ALERT_HEAD, _alert_rows(shown))
    body = f'<div class="cards">{cards}</div>{alerts_table}{quarantine}{spenders}{health}'
    return layout("Overview", body, current="/")


def tokens_page(*, rows: Sequence[TokenView], q: str, page: int, pages: int, total: int) -> str:
    search = (
        '<form method="get" action="/tokens" role="search"><label for="q">Search tokens</label>'
        f'<input type="search" id="q" name="q" value="{e(q)}" placeholder="name or provider">'
        '<button type="submit">Search</button></form>'
    )
    table = _table(
        f"{total:,} tokens" + (f" matching “{q}”" if q else "") + f" — page {page} of {pages}",
        ("Token", "Status", "Today", "This month", "Budget used", "Last used"),
        (
            [
                _link(t),
                e(t.status),
                e(money(t.today_usd)),
                e(money(t.month_usd)),
                e(pct(t.budget_used_pct)),
                e(when(t.last_used_at)),
            ]
            for t in rows
        ),
        nums=frozenset({2, 3, 4}),
    )
    nav = []
    if page > 1:
        nav.append(f'<a rel="prev" href="/tokens?{e(urlencode({"q": q, "page": page - 1}))}">← Previous</a>')
    if page < pages:
        nav.append(f'<a rel="next" href="/tokens?{e(urlencode({"q": q, "page": page + 1}))}">Next →</a>')
    pager = f'<nav class="pager" aria-label="Pages">{"".join(nav)}</nav>'
    return layout("Tokens", search + table + pager, current="/tokens")


def token_page(
    *,
    token: TokenView,
    spend_svg: str,
    heat_svg: str,
    alerts: Sequence[Mapping[str, object]],
    silences: Sequence[Mapping[str, object]],
    trail: Sequence[AuditRow],
    quarantined: AuditRow | None,
    can_restore: bool,
    access: Access,
) -> str:
    t = token
    facts = _table(
        "Limits and budget use",
        ("", "Spent", "Budget", "Relay limit"),
        [
            ["Today", e(money(t.today_usd)), e(money(t.budget_day_usd)), e(money(t.daily_usd_limit))],
            [
                "This month",
                e(money(t.month_usd)),
                e(money(t.budget_month_usd)),
                e(money(t.monthly_usd_limit)),
            ],
        ],
        nums=frozenset({1, 2, 3}),
    )
    state = f"<p>Status: <strong>{e(t.status)}</strong> on {e(t.provider)} ({e(t.kind)})"
    if t.protected:
        state += " · <strong>protected</strong>"
    if t.remain_usd is not None:
        state += f" · {e(money(t.remain_usd))} quota left at the relay"
    state += "</p>"
    if quarantined is not None:
        state += (
            f'<p class="notice error" role="status"><strong>Quarantined</strong> ({e(quarantined.action)}) '
            f"{e(when(quarantined.requested_at))}: {e(quarantined.reason)}</p>"
        )
    actions = []
    if access.can_act:
        actions.append(
            f'<a class="button" href="{e(token_url(t.provider, t.name, "silence"))}">Silence its alerts…</a>'
        )
        if quarantined is None:
            actions.append(
                f'<a class="button" href="{e(token_url(t.provider, t.name, "revoke"))}">Revoke (quarantine)…</a>'
            )
        elif can_restore and quarantined.action == "disable":
            actions.append(
                f'<a class="button" href="{e(token_url(t.provider, t.name, "restore"))}">Restore…</a>'
            )
    acts = f'<p class="actions">{" ".join(actions)}</p>' if actions else _read_only(access)
    trail_table = _table(
        "Audit trail",
        ("When", "Mode", "Action", "State", "Reason", "Detail"),
        (
            [e(when(r.requested_at)), e(r.mode), e(r.action), e(r.state), e(r.reason), e(r.detail)]
            for r in trail
        ),
    )
    body = (
        f"{state}{acts}<h2>Daily spend, last 30 days</h2>{spend_svg}"
        f"<h2>Activity by hour of week (UTC)</h2>{heat_svg}{facts}"
        f"{_table('Its alerts', _ALERT_HEAD, _alert_rows(alerts))}"
        f"{_silence_table(silences, access, caption='Silences that name it')}{trail_table}"
    )
    return layout(t.ref, body, current="/tokens")


def alerts_page(
    alerts: Sequence[Mapping[str, object]], group_by: Sequence[str], access: Access, *, page: int = 1
) -> str:
    """A table per notification group, GROUPS_PER_PAGE groups a page (most severe group first)."""
    groups: dict[tuple[str, ...], list[Mapping[str, object]]] = {}
    for a in alerts:
        labels = a.get("labels")
        values = labels if isinstance(labels, Mapping) else {}
        groups.setdefault(tuple(str(values.get(k, "")) for k in group_by), []).append(a)
    if not groups:
        return layout("Alerts", '<p class="muted">No alerts are pending or firing.</p>', current="/alerts")
    keys = list(groups)
    pages = max(1, -(-len(keys) // GROUPS_PER_PAGE))
    page = min(max(page, 1), pages)
    parts = [f"<p>{len(alerts):,} alerts in {len(keys):,} groups — page {page} of {pages}</p>"]
    for key in keys[(page - 1) * GROUPS_PER_PAGE : page * GROUPS_PER_PAGE]:
        members = groups[key]
        name = ", ".join(f"{k}={v}" for k, v in zip(group_by, key, strict=True)) or "all"
        rows = _alert_rows(members)
        if access.can_act:
            for row, a in zip(rows, members, strict=True):
                labels = a.get("labels")
                pairs = sorted(labels.items()) if isinstance(labels, Mapping) else []
                matchers = [f"{k}={v}" for k, v in pairs if k in ("rule", *group_by)]
                href = "/silences/new?" + urlencode([("m", m) for m in matchers])
                row.append(f'<a href="{e(href)}">Silence…</a>')
        head = (*_ALERT_HEAD, "Action") if access.can_act else _ALERT_HEAD
        parts.append(_table(f"Group {name} ({len(members)})", head, rows))
    nav = []
    if page > 1:
        nav.append(f'<a rel="prev" href="/alerts?page={page - 1}">← Previous</a>')
    if page < pages:
        nav.append(f'<a rel="next" href="/alerts?page={page + 1}">Next →</a>')
    pager = f'<nav class="pager" aria-label="Pages">{"".join(nav)}</nav>'
    return layout("Alerts", _read_only(access) + "".join(parts) + pager, current="/alerts")


def _silence_table(silences: Sequence[Mapping[str, object]], access: Access, *, caption: str) -> str:
    rows = []
    for s in silences:
        matchers = s.get("matchers")
        text = " ".join(str(m) for m in matchers) if isinstance(matchers, list) else ""
        row = [
            e(s.get("id")),
            e(s.get("status")),
            f"<code>{e(text)}</code>",
            e(s.get("ends_at")),
            e(s.get("created_by")),
            e(s.get("comment")),
        ]
        if access.can_act:
            row.append(
                f'<a href="/silences/{e(s.get("id"))}/expire">Expire…</a>'
                if s.get("status") != "expired"
                else ""
            )
        rows.append(row)
    head = ("Id", "Status", "Matchers", "Ends", "By", "Comment") + (("Action",) if access.can_act else ())
    return _table(caption, head, rows)


def silences_page(silences: Sequence[Mapping[str, object]], access: Access) -> str:
    new = (
        '<p><a class="button" href="/silences/new">New silence…</a></p>'
        if access.can_act
        else _read_only(access)
    )
    return layout(
        "Silences",
        new + _silence_table(silences, access, caption="Active and pending silences"),
        current="/silences",
    )


def audit_page(hygiene: Sequence[tuple[str, str, str, str, str]], trail: Sequence[AuditRow]) -> str:
    ranked = sorted(hygiene, key=lambda f: -severity_rank(f[0]))
    shown = ranked[:AUDIT_FINDINGS]
    more = (
        f" (the {len(shown)} most severe of {len(ranked):,}; keywatch audit lists all)"
        if len(ranked) > len(shown)
        else ""
    )
    h = _table(
        "Hygiene findings" + more,
        ("Severity", "Token", "Finding", "Detail"),
        (
            [e(sev), f'<a href="{e(token_url(p, tok))}">{e(p)}/{e(tok)}</a>', e(f), e(d)]
            for sev, p, tok, f, d in shown
        ),
    )
    t = _table(
        "Quarantines and restores (newest first)",
        ("When", "Token", "Mode", "Action", "State", "Reason", "Detail"),
        (
            [
                e(when(r.requested_at)),
                f'<a href="{e(token_url(r.provider, r.token))}">{e(r.provider)}/{e(r.token)}</a>',
                e(r.mode),
                e(r.action),
                e(r.state),
                e(r.reason),
                e(r.detail),
            ]
            for r in trail
        ),
    )
    return layout("Audit", h + t, current="/audit")


def confirm_page(form: Form, access: Access, *, extra: str = "", error: str = "") -> str:
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in form.fields.items())
    reason = (
        '<label for="reason">Reason (kept in the audit trail)</label>'
        '<input type="text" id="reason" name="reason" required maxlength="500">'
        if form.reason
        else ""
    )
    err = f'<p class="notice error" role="alert">{e(error)}</p>' if error else ""
    body = (
        f"{err}<p>{e(form.statement)}</p>"
        f'<form method="post" action="{e(form.action)}"><input type="hidden" name="csrf" value="{e(access.csrf)}">'
        f"{fields}{extra}{reason}"
        f'<button type="submit"{_DANGER if form.danger else ""}>{e(form.button)}</button> '
        f'<a href="{e(form.back)}">Cancel</a></form>'
    )
    return layout(form.title, body)


def message_page(title: str, message: str, *, ok: bool, back: str = "/") -> str:
    cls = "done" if ok else "error"
    body = f'<p class="notice {cls}" role="{"status" if ok else "alert"}">{e(message)}</p><p><a href="{e(back)}">Back</a></p>'
    return layout(title, body)


def login_page(csrf: str, *, error: str = "", next_url: str = "/") -> str:
    err = f'<p class="notice error" role="alert">{e(error)}</p>' if error else ""
    body = (
        f"{err}<p>This keywatch has an <code>api_token</code>: enter it once; it is kept in a cookie "
        "this browser sends only to this console.</p>"
        f'<form method="post" action="/login"><input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label for="token">API token</label><input type="password" id="token" name="token" required autocomplete="current-password">'
        '<button type="submit">Sign in</button></form>'
    )
    return layout("Sign in", body)
