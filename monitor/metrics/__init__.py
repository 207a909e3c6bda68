"""keywatch's Prometheus metrics (docs/metrics.md): names, and the cached text exposition."""

from monitor.metrics.exposition import DURATION_BUCKETS, Exposition, Family, JobHealth, ProviderHealth

__all__ = ["DURATION_BUCKETS", "METRIC_NAMES", "Exposition", "Family", "JobHealth", "ProviderHealth"]

# Every family keywatch exports (base names; histograms add _bucket/_sum/_count).
METRIC_NAMES = frozenset(
    {
        "keywatch_token_spend_usd_total",
        "keywatch_token_requests_total",
        "keywatch_token_spend_usd",
        "keywatch_token_budget_usd",
        "keywatch_token_budget_used_ratio",
        "keywatch_token_info",
        "keywatch_token_last_used_timestamp_seconds",
        "keywatch_token_expiry_timestamp_seconds",
        "keywatch_token_anomaly_score",
        "keywatch_alerts_firing",
        "keywatch_notifications_total",
        "keywatch_revocations_total",
        "keywatch_poll_duration_seconds",
        "keywatch_poll_errors_total",
        "keywatch_poll_retries_total",
        "keywatch_provider_up",
        "keywatch_last_poll_success_timestamp_seconds",
        "keywatch_auto_revoke_paused",
        "keywatch_build_info",
        "keywatch_token_spend_corrections_usd_total",
        "keywatch_store_up",
        "keywatch_notifications_pending",
        "keywatch_notification_oldest_pending_seconds",
        "keywatch_job_failures_total",
        "keywatch_job_last_success_timestamp_seconds",
        "keywatch_rules_duration_seconds",
        "keywatch_event_loop_lag_seconds",
        "keywatch_instance_info",
        "keywatch_provider_owner",
    }
)
