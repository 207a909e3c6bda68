# ruff: noqa: RUF001  (the relay's own messages, with Chinese punctuation)
"""The one-api family's token console on a simulated relay: token views, create, update,
disable, delete, key reveal, and which keys the relay still serves (one-api's token cache)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .absurd import absurd_entry
from .console import ENABLED, NumericIds, status_code
from .consolelogs import LogRows
from .eventindex import EventIndex
from .model import SimulatedRelay
from .quota import is_unlimited, remain_usd
from .token import Limits, SimToken

__all__ = ["ConsoleCore", "Dialect", "mask"]

Dialect = Literal["oneapi", "newapi"]
_MAX_NAME = 50


def mask(key: str) -> str:
    """How new-api (and relays that mask) show a key in lists: `abcd**********wxyz`."""
    return key[:4] + "**********" + key[-4:]


def _split(text: object) -> tuple[str, ...]:
    if not isinstance(text, str):
        return ()
    return tuple(p.strip() for p in text.replace("\n", ",").split(",") if p.strip())


@dataclass
class ConsoleCore:
    relay: SimulatedRelay
    dialect: Dialect
    quota_per_unit: float
    cache_seconds: float = 0.0  # one-api: how long a disabled or deleted key is still served
    index: EventIndex = field(init=False)
    ids: NumericIds = field(default_factory=NumericIds)
    logs: LogRows = field(init=False)
    _static: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _newest_first: tuple[int, list[SimToken]] = (-1, [])
    _deleted: dict[str, float] = field(default_factory=dict)  # key -> when deleted

    def __post_init__(self) -> None:
        self.index = EventIndex(self.relay)
        self.logs = LogRows(self.index)

    # --- reads ---------------------------------------------------------------------------------
    def tokens(self) -> list[SimToken]:
        """Listed tokens, up to date, newest id first."""
        self.index.sync()
        roster = self.relay.roster_version
        if self._newest_first[0] != roster:
            self.ids.refresh(self.relay)
            self._newest_first = (roster, list(reversed(self.relay.listed())))
        return self._newest_first[1]

    def find(self, number: str) -> SimToken | None:
        if not number.isdigit():
            return None
        self.ids.refresh(self.relay)
        sim_id = self.ids.sim_id(int(number))
        return self.relay.get(sim_id) if sim_id is not None else None

    def number(self, token_id: str) -> int:
        self.ids.refresh(self.relay)
        tok = self.relay.get(token_id)
        return self.ids.number(tok) if tok is not None else 0

    def key(self, tok: SimToken) -> str:
        """The key as the relay stores it: 48 characters, without `sk-`."""
        return tok.key.removeprefix("sk-")

    def view(self, tok: SimToken, now: float, *, masked: bool) -> dict[str, Any]:
        hit = self._static.get(tok.id)
        if hit is None or hit[0] != tok.version:
            hit = (tok.version, self._static_view(tok))
            self._static[tok.id] = hit
        view = dict(hit[1])
        qpu = self.quota_per_unit
        unlimited = view["unlimited_quota"]
        used = 0 if unlimited and self.dialect == "oneapi" else round(tok.lifetime_usd * qpu)
        key = self.key(tok)
        view["key"] = mask(key) if masked else key
        view["status"] = status_code(tok, now)
        view["accessed_time"] = int(tok.last_used_at if tok.last_used_at is not None else tok.created_at)
        view["remain_quota"] = round(remain_usd(tok) * qpu)
        view["used_quota"] = used
        return view

    def views(self, tokens: list[SimToken], now: float, *, masked: bool, route: str) -> list[dict[str, Any]]:
        """Entries as `route` answers them: with absurd numbers where the hostile relay says."""
        out = [self.view(t, now, masked=masked) for t in tokens]
        hostile = self.relay.hostile
        if (absurd := hostile.fires("absurd", route)) is not None:
            for tok, view in zip(tokens, out, strict=True):
                absurd_entry(view, hostile.absurd_kind(absurd, tok.id), tok.expires_at, now)
        return out

    def _static_view(self, tok: SimToken) -> dict[str, Any]:
        models = ",".join(tok.limits.allowed_models)
        view: dict[str, Any] = {
            "id": self.ids.number(tok),
            "user_id": 1,
            "name": tok.name,
            "created_time": int(tok.created_at),
            "expired_time": -1 if tok.expires_at is None else int(tok.expires_at),
            "unlimited_quota": is_unlimited(tok),
        }
        if self.dialect == "oneapi":
            view["models"] = models
            view["subnet"] = ",".join(tok.ip_whitelist)
        else:
            view["model_limits_enabled"] = bool(models)
            view["model_limits"] = models
            view["allow_ips"] = "\n".join(tok.ip_whitelist) or None
            view["group"] = "default"
            view["cross_group_retry"] = False
        return view

    # --- the key probe -------------------------------------------------------------------------
    def serves(self, key: str) -> bool:
        """Whether a relay call with this key (without `sk-`) is served. one-api caches tokens:
        a disabled or deleted key keeps working until its cache entry expires."""
        now = self.relay.now()
        tok = self.relay.by_key("sk-" + key)
        if tok is not None:
            if tok.accepts_key(now):
                return True
            return tok.disabled_at is not None and now < tok.disabled_at + self.cache_seconds
        deleted = self._deleted.get(key)
        return deleted is not None and now < deleted + self.cache_seconds

    # --- changes -------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> str | None:
        """None on success, else the relay's message."""
        name = body.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            return f"令牌名称长度必须在1-{_MAX_NAME}之间"
        expired = body.get("expired_time", -1)
        if not isinstance(expired, int) or isinstance(expired, bool):
            return "expired_time must be an integer"
        unlimited = bool(body.get("unlimited_quota", False))
        remain = body.get("remain_quota", 0)
        if not isinstance(remain, int) or isinstance(remain, bool) or remain < 0:
            return "remain_quota must be a non-negative integer"
        if self.dialect == "oneapi":
            models, ips = _split(body.get("models")), _split(body.get("subnet"))
        else:
            models = _split(body.get("model_limits")) if body.get("model_limits_enabled") else ()
            ips = _split(body.get("allow_ips"))
        self.relay.create_token(
            name,
            expires_at=None if expired == -1 else float(expired),
            limits=Limits(allowed_models=models),
            ip_whitelist=ips,
            unlimited_quota=unlimited,
            quota_usd=None if unlimited else remain / self.quota_per_unit,
        )
        return None

    def set_status(self, tok: SimToken, status: int) -> str | None:
        now = self.relay.now()
        if status == ENABLED:
            if tok.revoked_at is not None:
                return "令牌已被撤销，无法启用"
            if tok.expires_at is not None and now >= tok.expires_at:
                return "令牌已过期，无法启用，请先修改令牌过期时间"
            if not is_unlimited(tok) and remain_usd(tok) <= 0:
                return "令牌可用次数已用尽，无法启用，请先修改令牌剩余次数，或者设置为无限次数"
            self.relay.enable_token(tok.id)
        elif status in (2, 3, 4):
            self.relay.disable_token(tok.id)
        else:
            return f"unknown status {status}"
        return None

    def update(self, tok: SimToken, body: dict[str, Any]) -> str | None:
        """The full update (not status_only): name and expiry."""
        name = body.get("name", tok.name)
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            return f"令牌名称长度必须在1-{_MAX_NAME}之间"
        if name != tok.name:
            self.relay.rename_token(tok.id, name)
        expired = body.get("expired_time")
        if isinstance(expired, int) and not isinstance(expired, bool):
            tok.expires_at = None if expired == -1 else float(expired)
            tok.touch()
        return None

    def delete(self, tok: SimToken) -> None:
        self._deleted[self.key(tok)] = self.relay.now()
        self.relay.delete_token(tok.id)
