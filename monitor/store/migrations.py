"""keywatch's one schema history: every table (usage history and alert engine alike), as fixed DDL.

Each migration is a name and the statements it runs, in order, in one transaction, recorded in
`schema_migrations`. A migration that has shipped is never edited or reordered: a change is a new
migration appended at the end. Nothing here reads the live SQLModel or Core table classes, so a
fresh database and an upgraded one end up with the same schema by construction
(`tests/monitor/store/test_migrations.py` checks it against a database written by release 0.1.0).

Release 0.1.0 recorded `0001_initial` and `0002_request_log`, but created the alert engine's tables
with `create_all` and recorded nothing for them: `0003_alert_tables` therefore creates them only
where they are missing (IF NOT EXISTS), which is exactly what those databases need.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: tuple[str, ...]


_INITIAL = (
    """CREATE TABLE tokens (
	id INTEGER NOT NULL,
	provider VARCHAR NOT NULL,
	token_id VARCHAR NOT NULL,
	name VARCHAR NOT NULL,
	status VARCHAR NOT NULL,
	created_at FLOAT,
	last_used_at FLOAT,
	expires_at FLOAT,
	key_sha256 VARCHAR,
	limits_json VARCHAR NOT NULL,
	ip_whitelist_json VARCHAR NOT NULL,
	first_seen FLOAT NOT NULL,
	last_seen FLOAT NOT NULL,
	missing_since FLOAT,
	spend_total_usd FLOAT NOT NULL,
	requests_total INTEGER NOT NULL,
	mark_at FLOAT,
	mark_today_usd FLOAT,
	mark_month_usd FLOAT,
	mark_today_requests INTEGER,
	mark_total_usd FLOAT,
	PRIMARY KEY (id),
	UNIQUE (provider, token_id)
)""",
    """CREATE TABLE usage_deltas (
	id INTEGER NOT NULL,
	token_pk INTEGER NOT NULL,
	ts FLOAT NOT NULL,
	cost_usd FLOAT NOT NULL,
	requests INTEGER NOT NULL,
	gap BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(token_pk) REFERENCES tokens (id)
)""",
    """CREATE TABLE usage_hourly (
	token_pk INTEGER NOT NULL,
	hour INTEGER NOT NULL,
	cost_usd FLOAT NOT NULL,
	requests INTEGER NOT NULL,
	PRIMARY KEY (token_pk, hour),
	FOREIGN KEY(token_pk) REFERENCES tokens (id)
)""",
    """CREATE TABLE poll_runs (
	id INTEGER NOT NULL,
	provider VARCHAR NOT NULL,
	started_at FLOAT NOT NULL,
	finished_at FLOAT NOT NULL,
	ok BOOLEAN NOT NULL,
	complete BOOLEAN NOT NULL,
	tokens_seen INTEGER NOT NULL,
	tokens_changed INTEGER NOT NULL,
	tokens_skipped INTEGER NOT NULL,
	error_reason VARCHAR,
	error VARCHAR,
	PRIMARY KEY (id)
)""",
    """CREATE TABLE providers (
	name VARCHAR NOT NULL,
	kind VARCHAR NOT NULL,
	first_complete_poll_at FLOAT,
	last_success_at FLOAT,
	PRIMARY KEY (name)
)""",
    """CREATE TABLE poll_errors (
	provider VARCHAR NOT NULL,
	reason VARCHAR NOT NULL,
	count INTEGER NOT NULL,
	PRIMARY KEY (provider, reason)
)""",
    "CREATE INDEX ix_poll_runs_provider_started ON poll_runs (provider, started_at)",
    "CREATE INDEX ix_usage_deltas_token_ts ON usage_deltas (token_pk, ts)",
    "CREATE INDEX ix_usage_deltas_ts ON usage_deltas (ts)",
    "CREATE INDEX ix_usage_hourly_hour ON usage_hourly (hour)",
)

_REQUEST_LOG = (
    # Without a rowid the key is the table itself: one B-tree written per row instead of two.
    """CREATE TABLE request_log (
	token_pk INTEGER NOT NULL,
	request_id VARCHAR NOT NULL,
	ts FLOAT NOT NULL,
	model VARCHAR NOT NULL,
	ip VARCHAR,
	prompt_tokens INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	cost_usd FLOAT NOT NULL,
	elapsed_ms INTEGER,
	requests INTEGER NOT NULL,
	PRIMARY KEY (token_pk, request_id),
	FOREIGN KEY(token_pk) REFERENCES tokens (id)
) WITHOUT ROWID""",
    "CREATE INDEX ix_request_log_ts ON request_log (ts)",
)

_ALERT_TABLES = (
    """CREATE TABLE IF NOT EXISTS alert_state (
	fingerprint VARCHAR NOT NULL,
	rule VARCHAR NOT NULL,
	labels JSON NOT NULL,
	severity VARCHAR NOT NULL,
	state VARCHAR NOT NULL,
	active_since FLOAT NOT NULL,
	firing_since FLOAT,
	resolved_at FLOAT,
	last_eval FLOAT NOT NULL,
	last_hit_at FLOAT NOT NULL,
	consecutive_hits INTEGER NOT NULL,
	value FLOAT NOT NULL,
	summary TEXT NOT NULL,
	annotations JSON NOT NULL,
	for_polls INTEGER NOT NULL,
	keep_firing_for FLOAT NOT NULL,
	PRIMARY KEY (fingerprint)
)""",
    "CREATE INDEX IF NOT EXISTS ix_alert_state_state ON alert_state (state)",
    "CREATE INDEX IF NOT EXISTS ix_alert_state_rule ON alert_state (rule)",
    # AUTOINCREMENT: silence ids are typed into `silence expire ID`, so one is never reused.
    """CREATE TABLE IF NOT EXISTS alert_silence (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	matchers JSON NOT NULL,
	starts_at FLOAT NOT NULL,
	ends_at FLOAT NOT NULL,
	created_by VARCHAR NOT NULL,
	comment TEXT NOT NULL,
	expired BOOLEAN NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS notification_log (
	group_key VARCHAR NOT NULL,
	receiver VARCHAR NOT NULL,
	firing JSON NOT NULL,
	resolved JSON NOT NULL,
	sent_at FLOAT NOT NULL,
	reason VARCHAR NOT NULL,
	PRIMARY KEY (group_key, receiver)
)""",
    """CREATE TABLE IF NOT EXISTS notification_outbox (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	created_at FLOAT NOT NULL,
	group_key VARCHAR NOT NULL,
	receiver VARCHAR NOT NULL,
	tags JSON NOT NULL,
	title TEXT NOT NULL,
	body TEXT NOT NULL,
	notify_type VARCHAR NOT NULL,
	state VARCHAR NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at FLOAT NOT NULL,
	last_error TEXT NOT NULL,
	sent_at FLOAT,
	delivered JSON NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS ix_notification_outbox_due ON notification_outbox (state, next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS notification_counter (
	outcome VARCHAR NOT NULL,
	count INTEGER NOT NULL,
	PRIMARY KEY (outcome)
)""",
    """CREATE TABLE IF NOT EXISTS quarantine_actions (
	id INTEGER NOT NULL,
	provider VARCHAR NOT NULL,
	token_id VARCHAR NOT NULL,
	token VARCHAR NOT NULL,
	mode VARCHAR NOT NULL,
	action VARCHAR NOT NULL,
	reason TEXT NOT NULL,
	episode VARCHAR,
	state VARCHAR NOT NULL,
	attempts INTEGER NOT NULL,
	detail TEXT NOT NULL,
	requested_at FLOAT NOT NULL,
	updated_at FLOAT NOT NULL,
	verified BOOLEAN NOT NULL,
	PRIMARY KEY (id)
)""",
    "CREATE INDEX IF NOT EXISTS ix_quarantine_episode ON quarantine_actions (episode)",
    "CREATE INDEX IF NOT EXISTS ix_quarantine_token ON quarantine_actions (provider, token_id)",
    """CREATE TABLE IF NOT EXISTS audit_digest (
	name VARCHAR NOT NULL,
	sent_at FLOAT NOT NULL,
	PRIMARY KEY (name)
)""",
)

# Dips are corrections, not resets (monitor.spend): the high-water mark of each window within its
# period, where it differs from the figure shown (NULL: the same), and the dollars taken back.
_SPEND_CORRECTIONS = (
    "ALTER TABLE tokens ADD COLUMN corrections_usd_total FLOAT NOT NULL DEFAULT 0",
    "ALTER TABLE tokens ADD COLUMN mark_peak_today_usd FLOAT",
    "ALTER TABLE tokens ADD COLUMN mark_peak_month_usd FLOAT",
    "ALTER TABLE tokens ADD COLUMN mark_peak_total_usd FLOAT",
    "ALTER TABLE tokens ADD COLUMN mark_peak_today_requests INTEGER",
)

# Critical and security notices are retried until delivered, lower ones expire: the outbox row
# says which. Rows queued before this migration get the severity their Apprise type implies.
_OUTBOX_SEVERITY = (
    "ALTER TABLE notification_outbox ADD COLUMN severity VARCHAR NOT NULL DEFAULT 'info'",
    "UPDATE notification_outbox SET severity = CASE notify_type "
    "WHEN 'failure' THEN 'critical' WHEN 'warning' THEN 'warning' ELSE 'info' END",
)

# Several instances on one PostgreSQL database (monitor.cluster): who is alive, and who holds
# which lease (`provider:<name>` per provider, `leader` for the fleet-wide jobs). The epoch grows
# with every change of owner: an action checks (owner, epoch) in its own transaction (fencing).
# A quarantine is claimed once per incident (the alert episode) before the relay is called: an
# older release could not write two rows for one episode, but a duplicate is renamed, not lost.
_CLUSTER = (
    """CREATE TABLE instances (
	name VARCHAR NOT NULL,
	session VARCHAR NOT NULL,
	version VARCHAR NOT NULL,
	host VARCHAR NOT NULL,
	started_at FLOAT NOT NULL,
	heartbeat_at FLOAT NOT NULL,
	PRIMARY KEY (name)
)""",
    """CREATE TABLE leases (
	name VARCHAR NOT NULL,
	owner VARCHAR,
	epoch INTEGER NOT NULL,
	expires_at FLOAT NOT NULL,
	PRIMARY KEY (name)
)""",
    "UPDATE quarantine_actions SET episode = episode || '#' || CAST(id AS VARCHAR) WHERE episode IS NOT NULL "
    "AND id NOT IN (SELECT MAX(id) FROM quarantine_actions WHERE episode IS NOT NULL GROUP BY episode)",
    "CREATE UNIQUE INDEX ux_quarantine_incident ON quarantine_actions (episode) WHERE episode IS NOT NULL",
)

# Several senders on one outbox: who claimed a row being sent, and until when the claim holds
# (a row whose claimer died is sent again by another instance once the claim ran out).
_OUTBOX_CLAIMS = (
    "ALTER TABLE notification_outbox ADD COLUMN claimed_by VARCHAR",
    "ALTER TABLE notification_outbox ADD COLUMN claimed_until FLOAT",
)

# Append only.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _INITIAL),
    Migration("0002_request_log", _REQUEST_LOG),
    Migration("0003_alert_tables", _ALERT_TABLES),
    Migration("0004_spend_corrections", _SPEND_CORRECTIONS),
    Migration("0005_outbox_severity", _OUTBOX_SEVERITY),
    Migration("0006_cluster", _CLUSTER),
    Migration("0007_outbox_claims", _OUTBOX_CLAIMS),
)
