"""One quarantine per incident, whatever the number of instances: the database refuses a second
row for the same alert episode (migration 0006), on both engines."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from alerts.response.quarantine import quarantine_actions
from monitor.store import open_engine


def row(episode: str | None) -> dict[str, object]:
    return dict(
        provider="lz", token_id="1", token="dev-a", mode="auto", action="disable", reason="leak",
        episode=episode, state="in_progress", attempts=0, detail="", requested_at=1.0, updated_at=1.0,
        verified=False,
    )  # fmt: skip


def test_a_second_claim_of_the_same_incident_is_refused(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(quarantine_actions.insert().values(**row("fp@1")))
            conn.execute(quarantine_actions.insert().values(**row("fp@2")))  # a new incident may act
            conn.execute(quarantine_actions.insert().values(**row(None)))  # manual: no incident
            conn.execute(quarantine_actions.insert().values(**row(None)))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(quarantine_actions.insert().values(**row("fp@1")))
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(quarantine_actions)).scalar_one() == 4
    finally:
        engine.dispose()
