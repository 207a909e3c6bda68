"""GET /api/v1/tokens' rows built once per change (issue 9, item 15): TokenRowCache gives the very
bytes orjson.dumps(token_rows(...)) gives, and rebuilds only the rows whose state or score changed."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from monitor import views
from monitor.policy import PolicyBook
from monitor.settings import Budget, TokenPolicy
from monitor.spend import UsageMark
from monitor.tokens import TokenState
from monitor.views import TokenRowCache, token_rows

T0 = 1_790_000_000.0


def fleet(n: int = 50) -> list[TokenState]:
    states = []
    for i in range(n):
        states.append(
            TokenState(
                pk=i,
                provider=("lz", "oa")[i % 2],
                token_id=f"key_{i}",
                name=f"prod-web{i % 7}-api-2026-0{1 + i % 9}"
                if i % 3
                else f"Bobs key {i % 5}",  # names repeat
                status="active" if i % 4 else "disabled",
                first_seen=T0,
                last_seen=T0,
                created_at=T0 - i if i % 2 else None,
                last_used_at=T0 + i * 0.25 if i % 3 else None,
                expires_at=T0 + 86400 * i if i % 4 == 1 else None,
                spend_total_usd=i * 0.1,
                usage_known=bool(i % 5),
                mark=UsageMark(T0, today_usd=i * 0.01, month_usd=i * 1.5) if i % 2 else None,
            )
        )
    return states


POLICIES = PolicyBook([TokenPolicy("prod-*", Budget(daily_usd=5, monthly_usd=50), protected=True)])


def test_cached_body_is_byte_identical_to_the_rows_the_cli_prints() -> None:
    states = fleet()
    scores = {("lz", "key_2"): 4.5, ("oa", "key_3"): 0.0, ("lz", "gone"): 1.0}
    cache = TokenRowCache()
    for score_map in (None, scores):
        assert cache.body(states, POLICIES, score_map) == orjson.dumps(
            token_rows(states, POLICIES, score_map)
        )
    assert cache.body([], POLICIES) == orjson.dumps(token_rows([], POLICIES)) == b"[]"


def test_rows_are_built_once_per_change_not_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = views.token_row

    def counting(s: TokenState, policies: PolicyBook, score: float | None = None) -> dict[str, object]:
        built.append(s.token_id)
        return real(s, policies, score)

    monkeypatch.setattr(views, "token_row", counting)
    states = fleet()
    scores: dict[tuple[str, str], float] = {}
    cache = TokenRowCache()
    first = cache.body(states, POLICIES, scores)
    assert len(built) == len(states)

    built.clear()
    for _ in range(10):
        assert cache.body(list(states), POLICIES, scores) is first  # the same bytes, nothing rebuilt
    assert built == []

    states[3] = replace(states[3], spend_total_usd=99.0)  # one token changed: a new TokenState
    scores[("lz", "key_4")] = 7.0  # the detector updates its mapping in place
    body = cache.body(states, POLICIES, scores)
    assert sorted(built) == ["key_3", "key_4"]
    assert body == orjson.dumps(token_rows(states, POLICIES, scores))

    built.clear()
    cache.body(states[1:], POLICIES, scores)  # a token gone
    assert built == []
    cache.body(states[1:], PolicyBook([]), scores)  # a reload's new policies change every row
    assert len(built) == len(states) - 1


def test_a_token_whose_relay_sends_an_absurd_expiry_still_lists() -> None:
    """A relay's `expires_at` of 6e17 made datetime overflow: every GET /api/v1/tokens failed."""
    states = [replace(fleet(1)[0], expires_at=6e17, last_used_at=-6e17)]
    (row,) = orjson.loads(TokenRowCache().body(states, POLICIES))
    assert (row["expires_at"], row["last_used_at"]) == ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z")
