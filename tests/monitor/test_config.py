"""monitor.config: the YAML contract (docs/config.md), its errors, and the example config."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor import config
from monitor.config import ConfigError, load_settings, parse_business_hours, summarize
from monitor.config_doc import rows
from monitor.durations import format_duration, parse_duration
from monitor.secret import Secret
from monitor.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-SECRETVALUE123"
PROVIDER = f"""\
providers:
  - name: lz
    kind: laozhang
    base_url: https://relay.example.com
    admin_token: {SECRET}
"""


def write(tmp_path: Path, text: str, name: str = "keywatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), env=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value


# (id, config text, key path, reason; a reason ending in "..." is a prefix)
BAD: list[tuple[str, str, str, str]] = [
    (
        "unknown-top",
        PROVIDER + "retension: {raw: 1d}\n",
        "retension",
        "unknown key (did you mean 'retention'?)",
    ),
    ("unknown-no-hint", PROVIDER + "zzz: 1\n", "zzz", "unknown key"),
    (
        "unknown-nested",
        PROVIDER + "    poll_intervall: 60s\n",
        "providers[0].poll_intervall",
        "unknown key (did you mean 'poll_interval'?)",
    ),
    (
        "unknown-deep",
        PROVIDER + "rules: {anomaly: {sensitivty: 3}}\n",
        "rules.anomaly.sensitivty",
        "unknown key (did you mean 'sensitivity'?)",
    ),
    (
        "unknown-severity",
        PROVIDER + "notify: {routes: {critcal: [x]}}\n",
        "notify.routes.critcal",
        "unknown key...",
    ),
    (
        "wrong-type-duration",
        PROVIDER + "    timeout: true\n",
        "providers[0].timeout",
        "expected a duration like 30s or 5m, got a boolean",
    ),
    (
        "wrong-type-number",
        PROVIDER + "tokens: [{match: '*', budget: {daily_usd: '50'}}]\n",
        "tokens[0].budget.daily_usd",
        "expected a number, got a string",
    ),
    (
        "bool-is-not-a-number",
        PROVIDER + "rules: {anomaly: {sensitivity: true}}\n",
        "rules.anomaly.sensitivity",
        "expected a number, got a boolean",
    ),
    (
        "wrong-type-bool",
        PROVIDER + "response: {dry_run: 'no'}\n",
        "response.dry_run",
        "expected true or false, got a string",
    ),
    (
        "wrong-type-list",
        PROVIDER + "response: {protect: prod-*}\n",
        "response.protect",
        "expected a list, got a string",
    ),
    ("wrong-type-section", PROVIDER + "rules: [1]\n", "rules", "expected a mapping, got a list"),
    ("non-string-key", PROVIDER + "1: x\n", "1", "keys must be strings, got an integer"),
    (
        "bad-duration",
        PROVIDER + "    poll_interval: 5 minutes\n",
        "providers[0].poll_interval",
        "invalid duration '5 minutes' (use e.g. 30s, 5m, 1h, 14d)",
    ),
    ("negative-duration", PROVIDER + "retention: {raw: -1s}\n", "retention.raw", "invalid duration '-1s'..."),
    ("empty-duration", PROVIDER + "retention: {raw: ''}\n", "retention.raw", "invalid duration ''..."),
    (
        "zero-duration",
        PROVIDER + "    poll_interval: 0s\n",
        "providers[0].poll_interval",
        "must be longer than 0s",
    ),
    (
        "missing-base-url",
        PROVIDER.replace("    base_url: https://relay.example.com\n", ""),
        "providers[0].base_url",
        "required",
    ),
    (
        "missing-admin-token",
        PROVIDER.replace(f"    admin_token: {SECRET}\n", ""),
        "providers[0].admin_token",
        "required (or admin_token_file)",
    ),
    (
        "newapi-without-user-id",
        PROVIDER.replace("laozhang", "newapi"),
        "providers[0].user_id",
        "required for kind newapi (the New-Api-User header)",
    ),
    (
        "openai-without-project",
        PROVIDER.replace("laozhang", "openai"),
        "providers[0].project_id",
        "required for kind openai",
    ),
    (
        "user-id-string",
        PROVIDER.replace("laozhang", "newapi") + "    user_id: '1'\n",
        "providers[0].user_id",
        "expected an integer, got a string",
    ),
    ("no-providers", "listen: 127.0.0.1:9477\n", "providers", "at least one provider is required"),
    (
        "duplicate-provider",
        PROVIDER + PROVIDER.removeprefix("providers:\n"),
        "providers[1].name",
        "duplicate provider name 'lz'",
    ),
    (
        "bad-provider-name",
        PROVIDER.replace("name: lz", "name: LZ"),
        "providers[0].name",
        "invalid provider name 'LZ'...",
    ),
    (
        "bad-kind",
        PROVIDER.replace("kind: laozhang", "kind: laozang"),
        "providers[0].kind",
        "must be one of laozhang, oneapi, newapi, openai, litellm, openrouter, anthropic; got 'laozang'",
    ),
    (
        "base-url-with-credentials",
        PROVIDER.replace("https://", f"https://user:{SECRET}@"),
        "providers[0].base_url",
        "must not contain a user or password (put credentials in secret keys)",
    ),
    (
        "bad-base-url",
        PROVIDER.replace("https://relay.example.com", "ftp://relay.example.com"),
        "providers[0].base_url",
        "must be an http(s) URL like https://host[:port][/path]",
    ),
    (
        "concurrency-range",
        PROVIDER + "    concurrency: 0\n",
        "providers[0].concurrency",
        "must be between 1 and 512, got 0",
    ),
    (
        "bad-timezone",
        PROVIDER + "    timezone: Mars/Base\n",
        "providers[0].timezone",
        "unknown time zone 'Mars/Base'...",
    ),
    (
        "unreadable-file",
        PROVIDER.replace(f"admin_token: {SECRET}", "admin_token_file: missing.txt"),
        "providers[0].admin_token_file",
        "cannot read ...",
    ),
    (
        "unreadable-key-file",
        PROVIDER + "    keys: {prod-a_file: missing.txt}\n",
        "providers[0].keys.prod-a_file",
        "cannot read ...",
    ),
    (
        "both-inline-and-file",
        PROVIDER + "    admin_token_file: token.txt\n",
        "providers[0].admin_token",
        "give either admin_token or admin_token_file, not both",
    ),
    (
        "both-key-and-key-file",
        PROVIDER + f"    keys: {{prod-a: {SECRET}, prod-a_file: token.txt}}\n",
        "providers[0].keys.prod-a",
        "give either prod-a or prod-a_file, not both",
    ),
    (
        "secret-not-a-string",
        PROVIDER.replace(f"admin_token: {SECRET}", "admin_token: 12345"),
        "providers[0].admin_token",
        "expected a string, got an integer (quote it)",
    ),
    ("yaml-syntax", PROVIDER + "tokens: [\n", "(root)", "YAML syntax error at line 7: ..."),
    ("yaml-tab", PROVIDER + "\tlisten: x\n", "(root)", "YAML syntax error at line 6: ..."),
    ("yaml-duplicate-key", PROVIDER + "    kind: oneapi\n", "(root)", "duplicate key 'kind' at line 6"),
    ("empty-file", "", "(root)", "the config is empty"),
    ("comments-only", "# nothing\n", "(root)", "the config is empty"),
    ("top-level-list", "- a\n- b\n", "(root)", "expected a mapping at the top level, got a list"),
    (
        "missing-env",
        PROVIDER.replace(SECRET, "${LZ_ADMIN_TOKEN}"),
        "providers[0].admin_token",
        "environment variable LZ_ADMIN_TOKEN is not set",
    ),
    (
        "unterminated-interpolation",
        PROVIDER.replace(SECRET, SECRET + "${X"),
        "providers[0].admin_token",
        "unterminated '${' (write '$$' for a literal '$')",
    ),
    (
        "bad-listen",
        PROVIDER + "listen: localhost\n",
        "listen",
        "expected HOST:PORT like 127.0.0.1:9477, got 'localhost'",
    ),
    (
        "bad-listen-port",
        PROVIDER + "listen: 0.0.0.0:70000\n",
        "listen",
        "port must be between 1 and 65535, got 70000",
    ),
    (
        "bad-listen-port-0",
        PROVIDER + "listen: 0.0.0.0:0\n",
        "listen",
        "port must be between 1 and 65535, got 0",
    ),
    (
        "bad-database",
        PROVIDER + f"database: {SECRET}\n",
        "database",
        "expected a SQLAlchemy URL like sqlite:///keywatch.db",
    ),
    (
        "bad-business-hours-day",
        PROVIDER + "tokens: [{match: '*', business_hours: 'mon-fry 08:00-20:00 Europe/Berlin'}]\n",
        "tokens[0].business_hours",
        "invalid business hours 'mon-fry 08:00-20:00 Europe/Berlin': unknown day in 'mon-fry'...",
    ),
    (
        "bad-business-hours-time",
        PROVIDER + "tokens: [{match: '*', business_hours: 'mon-fri 8-20 UTC'}]\n",
        "tokens[0].business_hours",
        "invalid business hours 'mon-fri 8-20 UTC': bad time range '8-20'...",
    ),
    (
        "bad-business-hours-zone",
        PROVIDER + "tokens: [{match: '*', business_hours: 'mon-fri 08:00-20:00 Europe/Berln'}]\n",
        "tokens[0].business_hours",
        "invalid business hours 'mon-fri 08:00-20:00 Europe/Berln': unknown time zone 'Europe/Berln'...",
    ),
    (
        "bad-business-hours-shape",
        PROVIDER + "tokens: [{match: '*', business_hours: 'weekdays'}]\n",
        "tokens[0].business_hours",
        "invalid business hours 'weekdays': expected '<days> HH:MM-HH:MM <time zone>'...",
    ),
    ("policy-without-match", PROVIDER + "tokens: [{protected: true}]\n", "tokens[0].match", "required"),
    (
        "negative-budget",
        PROVIDER + "tokens: [{match: '*', budget: {monthly_usd: -1}}]\n",
        "tokens[0].budget.monthly_usd",
        "must be at least 0, got -1",
    ),
    (
        "threshold-range",
        PROVIDER + "rules: {budget: {thresholds: [0.5, 11]}}\n",
        "rules.budget.thresholds[1]",
        "must be at most 10, got 11",
    ),
    (
        "threshold-zero",
        PROVIDER + "rules: {budget: {thresholds: [0]}}\n",
        "rules.budget.thresholds[0]",
        "must be greater than 0, got 0",
    ),
    (
        "anomaly-for",
        PROVIDER + "rules: {anomaly: {for: 0}}\n",
        "rules.anomaly.for",
        "must be at least 1, got 0",
    ),
    (
        "anomaly-for-float",
        PROVIDER + "rules: {anomaly: {for: 1.5}}\n",
        "rules.anomaly.for",
        "expected an integer, got a number",
    ),
    (
        "response-action",
        PROVIDER + "response: {action: remove}\n",
        "response.action",
        "must be one of disable, delete; got 'remove'",
    ),
    (
        "max-per-hour",
        PROVIDER + "response: {max_per_hour: -1}\n",
        "response.max_per_hour",
        "must be at least 0, got -1",
    ),
    (
        "route-tag-no-target",
        PROVIDER
        + "notify:\n  urls: [{url: 'json://localhost', tags: [critical]}]\n"
        + "  routes: {critical: [critical], warning: [critical], info: [], security: [security]}\n",
        "notify.routes.security",
        "tag 'security' matches no notify target",
    ),
    (
        "default-route-no-target",
        PROVIDER + "notify:\n  urls: [{url: 'json://localhost', tags: [critical]}]\n",
        "notify.routes.warning",
        "tag 'warning' matches no notify target (a default route: set it, [] to log only)",
    ),
    (
        "bad-apprise-url",
        PROVIDER + f"notify:\n  urls: ['nosuchscheme://user:{SECRET}@host']\n",
        "notify.urls[0]",
        "Apprise cannot use this nosuchscheme:// URL...",
    ),
    (
        "not-an-url",
        PROVIDER + f"notify:\n  urls: [{{url: '{SECRET}', tags: [critical]}}]\n",
        "notify.urls[0].url",
        "not an Apprise URL (expected scheme://...)",
    ),
    (
        "bad-tag",
        PROVIDER + "notify:\n  urls: [{url: 'json://localhost', tags: ['a b']}]\n",
        "notify.urls[0].tags[0]",
        "invalid tag 'a b'...",
    ),
    (
        "missing-apprise-config",
        PROVIDER + "notify: {apprise_config: nope.yaml}\n",
        "notify.apprise_config",
        "cannot read ...",
    ),
    (
        "missing-github-keys",
        PROVIDER + "leak_reports: {github_public_keys: keys.pem}\n",
        "leak_reports.github_public_keys",
        "cannot read ...",
    ),
    (
        "bad-grafana-url",
        PROVIDER + "notify: {grafana_url: grafana.local}\n",
        "notify.grafana_url",
        "must be an http(s) URL like https://host[:port][/path]",
    ),
    # keys that are no field of their own: set by the loader, nested, or read from a file
    ("source-is-not-a-key", PROVIDER + "source: other.yaml\n", "source", "unknown key"),
    (
        "unknown-in-nested-section",
        PROVIDER + "rules: {expiry: {warn_befor: 1d}}\n",
        "rules.expiry.warn_befor",
        "unknown key (did you mean 'warn_before'?)",
    ),
    (
        "unknown-null-key",
        PROVIDER + "rules: {rotation: {prd: }}\n",
        "rules.rotation.prd",
        "unknown key (did you mean 'prod'?)",
    ),
    (
        "nested-section-not-a-mapping",
        PROVIDER + "rules: {rotation: 90d}\n",
        "rules.rotation",
        "expected a mapping, got a string",
    ),
    (
        "no-thresholds",
        PROVIDER + "rules: {budget: {thresholds: []}}\n",
        "rules.budget.thresholds",
        "give at least one threshold (or set enabled: false)",
    ),
    (
        "null-key",
        PROVIDER + "    keys: {prod-a: }\n",
        "providers[0].keys.prod-a",
        "required (or prod-a_file)",
    ),
    (
        "typo-beats-the-missing-key-it-causes",
        PROVIDER.replace("base_url:", "base_ur:"),
        "providers[0].base_ur",
        "unknown key (did you mean 'base_url'?)",
    ),
    (
        "secret-list-is-told-to-quote",
        PROVIDER + f"api_token: [{SECRET}]\n",
        "api_token",
        "expected a string, got a list (quote it)",
    ),
    (
        "non-finite-budget",
        PROVIDER + "tokens: [{match: '*', budget: {daily_usd: .inf}}]\n",
        "tokens[0].budget.daily_usd",
        "must be a finite number, got inf",
    ),
]


@pytest.mark.parametrize(("text", "key", "reason"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_config(tmp_path: Path, text: str, key: str, reason: str) -> None:
    (tmp_path / "token.txt").write_text("sk-from-file\n")
    err = error(tmp_path, text)
    assert err.key == key
    if reason.endswith("..."):
        assert err.reason.startswith(reason.removesuffix("...")), err.reason
    else:
        assert err.reason == reason
    message = str(err)
    assert message == f"config error: {key}: {err.reason}"
    assert "\n" not in message and "\r" not in message
    assert SECRET not in message  # every case carries the secret somewhere in the file


def test_yaml_error_names_the_line_and_hides_the_text(tmp_path: Path) -> None:
    err = error(tmp_path, PROVIDER + f"api_token: {SECRET}: oops\n")
    assert err.key == "(root)"
    assert err.reason.startswith("YAML syntax error at line 6: ")
    assert SECRET not in str(err)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml", env={})
    assert (
        str(info.value)
        == f"config error: (file): cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, PROVIDER)
    assert s.listen == "127.0.0.1:9477"
    assert s.database == f"sqlite:///{tmp_path / 'keywatch.db'}"
    assert s.providers[0].admin_token == Secret(SECRET)
    assert s.providers[0].poll_interval == 60.0
    assert s.rules == Settings().rules
    assert s.notify == Settings().notify
    assert s.response == Settings().response
    assert s.source == str(tmp_path / "keywatch.yaml")


def test_full_provider(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """\
        providers:
          - name: na-1
            kind: newapi
            base_url: http://127.0.0.1:3000/
            admin_token: t
            user_id: 7
            poll_interval: 1h30m
            timeout: 500ms
            concurrency: 4
            retries: 0
            timezone: Asia/Shanghai
            quota_per_unit: 1000
            reveal_keys: true
            action: delete
          - {name: oa, kind: openai, base_url: https://api.openai.com, admin_token: t, project_id: proj_x}
        """,
    )
    p = s.providers[0]
    assert (p.base_url, p.user_id, p.poll_interval, p.timeout) == ("http://127.0.0.1:3000", 7, 5400.0, 0.5)
    assert (p.concurrency, p.retries, p.timezone, p.quota_per_unit) == (4, 0, "Asia/Shanghai", 1000.0)
    assert (p.reveal_keys, p.action) == (True, "delete")
    assert s.providers[1].project_id == "proj_x"


def test_sections(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        PROVIDER
        + """\
tokens:
  - {match: "prod-*", budget: {daily_usd: 50, monthly_usd: 500}, protected: true,
     business_hours: "mon-fri 08:00-20:00 Europe/Berlin"}
  - match: "*"
rules:
  budget: {thresholds: [1.0, 0.5, 0.8, 0.5, 2]}
  anomaly: {sensitivity: 3, min_impact_usd: 0, min_impact_pct: 50, for: 3, min_requests: 0}
  leak: {enabled: false, for: 2}
  expiry: {warn_before: 0}
  unused: {after: 1w}
  rotation: {prod: 30d, default: 60d}
  provider_down: {after: 5}
notify:
  routes: {info: []}
  group_by: [rule]
  group_wait: 0s
  repeat_interval: 1d
  send_resolved: false
  grafana_url: https://grafana.example.com/d/keywatch
response: {auto_revoke: true, dry_run: true, action: delete, max_per_hour: 0, protect: ["prod-*", "ci-*"]}
retention: {raw: 7d, hourly: 90d}
""",
    )
    assert s.tokens[0].budget.daily_usd == 50.0 and s.tokens[0].protected
    assert s.tokens[1].budget.monthly_usd is None and not s.tokens[1].protected
    assert s.rules.budget.thresholds == (0.5, 0.8, 1.0, 2.0)
    assert (s.rules.anomaly.sensitivity, s.rules.anomaly.for_polls, s.rules.anomaly.min_requests) == (
        3.0,
        3,
        0,
    )
    assert (s.rules.leak.enabled, s.rules.leak.for_polls) == (False, 2)
    assert (s.rules.expiry_warn_before, s.rules.unused_after) == (0.0, 7 * 86400.0)
    assert (s.rules.rotation_prod, s.rules.rotation_default, s.rules.provider_down_after) == (
        2592000.0,
        5184000.0,
        5,
    )
    assert s.notify.routes["info"] == () and s.notify.routes["security"] == ("security", "critical")
    assert (s.notify.group_by, s.notify.group_wait, s.notify.repeat_interval) == (("rule",), 0.0, 86400.0)
    assert s.notify.grafana_url == "https://grafana.example.com/d/keywatch" and not s.notify.send_resolved
    assert s.response.protect == ("prod-*", "ci-*") and s.response.action == "delete"
    assert (s.retention.raw, s.retention.hourly) == (7 * 86400.0, 90 * 86400.0)


def test_null_sections_and_values_mean_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, PROVIDER + "    poll_interval:\nnotify:\nrules:\n  budget:\n")
    assert s.providers[0].poll_interval == 60.0
    assert s.notify == Settings().notify and s.rules == Settings().rules


# --- interpolation --------------------------------------------------------------------------------------


def test_interpolation(tmp_path: Path) -> None:
    text = """\
    api_token: ${API_TOKEN:-fallback}
    listen: ${HOST:-127.0.0.1}:${PORT:-9477}
    providers:
      - name: na
        kind: newapi
        base_url: ${BASE_URL}
        admin_token: "pa$$word-${TOKEN}"
        user_id: ${USER_ID:-1}
        poll_interval: ${POLL:-30s}
        reveal_keys: ${REVEAL:-false}
        quota_per_unit: ${QPU:-500000}
        project_id: $${NOT_A_VAR} and $x
    leak_reports:
      hmac_secret: ${EMPTY:-}
    """
    env = {
        "BASE_URL": "https://n.example.com",
        "TOKEN": "t0k",
        "PORT": "8080",
        "USER_ID": "42",
        "REVEAL": "yes",
    }
    env["API_TOKEN"] = ""  # set but empty: `:-` takes the default
    s = load(tmp_path, text, env)
    p = s.providers[0]
    assert s.api_token.reveal() == "fallback"
    assert s.listen == "127.0.0.1:8080"
    assert p.base_url == "https://n.example.com"
    assert p.admin_token.reveal() == "pa$word-t0k"
    assert (p.user_id, p.poll_interval, p.reveal_keys, p.quota_per_unit) == (42, 30.0, True, 500000.0)
    assert p.project_id == "${NOT_A_VAR} and $x"
    assert s.leak_reports.hmac_secret == Secret("")


def test_interpolated_numbers_in_lists_and_nested_keys(tmp_path: Path) -> None:
    text = PROVIDER + "rules: {budget: {thresholds: ['${T}', 2]}, provider_down: {after: '${N}'}}\n"
    s = load(tmp_path, text, {"T": "0.25", "N": "7"})
    assert (s.rules.budget.thresholds, s.rules.provider_down_after) == ((0.25, 2.0), 7)


def test_interpolated_number_must_still_be_a_number(tmp_path: Path) -> None:
    err = error(tmp_path, PROVIDER.replace("laozhang", "newapi") + "    user_id: ${UID}\n", {"UID": "abc"})
    assert (err.key, err.reason) == ("providers[0].user_id", "expected an integer, got a string")


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KW_TEST_TOKEN", "from-os")
    s = load_settings(write(tmp_path, PROVIDER.replace(SECRET, "${KW_TEST_TOKEN}")))
    assert s.providers[0].admin_token.reveal() == "from-os"


# --- files and paths --------------------------------------------------------------------------------------


def test_secret_files(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "admin").write_text("sk-admin\n")
    (secrets / "key").write_text("sk-key\r\n")
    (tmp_path / "api").write_text("api-token")
    (tmp_path / "hmac").write_text("hmac\n\n")
    s = load(
        tmp_path,
        f"""\
        api_token_file: api
        providers:
          - name: lz
            kind: laozhang
            base_url: https://relay.example.com
            admin_token_file: secrets/admin
            keys:
              prod-a_file: {secrets / "key"}
              prod-b: sk-inline
        leak_reports:
          hmac_secret_file: ${{CREDENTIALS_DIRECTORY}}/hmac
        """,
        {"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    p = s.providers[0]
    assert p.admin_token.reveal() == "sk-admin"
    assert {name: key.reveal() for name, key in p.keys.items()} == {"prod-a": "sk-key", "prod-b": "sk-inline"}
    assert s.api_token.reveal() == "api-token"
    assert s.leak_reports.hmac_secret.reveal() == "hmac"


def test_empty_secret_file_for_a_required_secret(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    err = error(tmp_path, PROVIDER.replace(f"admin_token: {SECRET}", "admin_token_file: empty"))
    assert (err.key, err.reason) == ("providers[0].admin_token", "is empty")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///data/kw.db", "sqlite:///{dir}/data/kw.db"),
        ("sqlite+pysqlite:///kw.db", "sqlite+pysqlite:///{dir}/kw.db"),
        ("sqlite:////var/lib/kw.db", "sqlite:////var/lib/kw.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://kw:pw@db/kw", "postgresql://kw:pw@db/kw"),
    ],
)
def test_database_paths(tmp_path: Path, url: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)  # the postgres extra, installed
    s = load(tmp_path, PROVIDER + f"database: '{url}'\n")
    assert s.database == expected.format(dir=tmp_path)


def test_a_postgresql_url_without_its_driver_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: False)
    err = error(tmp_path, PROVIDER + f"database: postgresql+psycopg://kw:{SECRET}@db/kw\n")
    assert err.key == "database"
    assert "keywatch[postgres]" in err.reason and SECRET not in str(err)


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "apprise.txt").write_text("critical,warning,info,security=json://localhost\n")
    (conf / "gh.pem").write_text("-----BEGIN PUBLIC KEY-----\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    s = load_settings(
        write(
            conf,
            PROVIDER + "notify: {apprise_config: apprise.txt}\nleak_reports: {github_public_keys: gh.pem}\n",
        ),
        env={},
    )
    assert s.notify.apprise_config == str(conf / "apprise.txt")
    assert s.leak_reports.github_public_keys == str(conf / "gh.pem")
    assert s.database == f"sqlite:///{conf / 'keywatch.db'}"


# --- notify ------------------------------------------------------------------------------------------------


def test_notify_targets(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        PROVIDER
        + """\
notify:
  urls:
    - url: mailto://user:pass@smtp.example.com?to=ops@example.com
      tags: [Critical, security, critical]
    - url: ${CHAT_URL:-}
      tags: [warning]
    - json://localhost
    - {url: 'json://example.com', tags: [always]}
""",
    )
    urls = s.notify.urls
    assert len(urls) == 3  # the empty ${CHAT_URL:-} is no target
    assert urls[0].tags == ("critical", "security") and urls[2].tags == ("always",)
    assert urls[0].url.reveal().startswith("mailto://user:pass@")


def test_routes_check_uses_apprise_config_tags(tmp_path: Path) -> None:
    (tmp_path / "apprise.yaml").write_text(
        "urls:\n  - json://localhost:\n      tag: critical, security\n  - json://example.com:\n      tag: pager\n"
    )
    base = PROVIDER + "notify:\n  apprise_config: apprise.yaml\n"
    s = load(tmp_path, base + "  routes: {warning: [pager], info: [], security: [security]}\n")
    assert s.notify.routes["warning"] == ("pager",)
    err = error(tmp_path, base + "  routes: {warning: [chat], info: []}\n")
    assert (err.key, err.reason) == ("notify.routes.warning", "tag 'chat' matches no notify target")


def test_routes_check_is_skipped_when_the_apprise_config_includes_others(tmp_path: Path) -> None:
    (tmp_path / "apprise.yaml").write_text("include:\n  - other.yaml\nurls:\n  - json://localhost\n")
    s = load(tmp_path, PROVIDER + "notify: {apprise_config: apprise.yaml, routes: {critical: [anything]}}\n")
    assert s.notify.routes["critical"] == ("anything",)


def test_apprise_config_without_targets(tmp_path: Path) -> None:
    (tmp_path / "apprise.yaml").write_text("# nothing here\n")
    err = error(tmp_path, PROVIDER + "notify: {apprise_config: apprise.yaml}\n")
    assert err.key == "notify.apprise_config" and err.reason.startswith("no usable notification URLs")


# --- secrets never leak ------------------------------------------------------------------------------------


def test_no_secret_in_repr_or_summary(tmp_path: Path) -> None:
    text = f"""\
    api_token: {SECRET}-api
    providers:
      - name: lz
        kind: laozhang
        base_url: https://relay.example.com
        admin_token: {SECRET}-admin
        keys: {{prod-a: {SECRET}-key}}
    notify:
      urls:
        - url: mailto://user:{SECRET}-mail@smtp.example.com?to=ops@example.com
          tags: [critical, security, warning, info]
    leak_reports: {{hmac_secret: {SECRET}-hmac}}
    """
    s = load(tmp_path, text)
    assert s.providers[0].keys["prod-a"].reveal() == f"{SECRET}-key"
    assert SECRET not in repr(s)
    summary = "\n".join(summarize(s))
    assert SECRET not in summary
    assert "mailto://…" in summary and "smtp.example.com" not in summary
    assert "relay.example.com" in summary


def test_summary_response_modes(tmp_path: Path) -> None:
    def mode(response: str) -> str:
        return next(
            line for line in summarize(load(tmp_path, PROVIDER + response)) if line.startswith("response:")
        )

    assert mode("") == "response: auto-revoke off, 0 protected patterns"
    assert mode("response: {auto_revoke: true, dry_run: true}\n").startswith(
        "response: auto-revoke dry run (would disable)"
    )
    assert mode("response: {auto_revoke: true, max_per_hour: 2, protect: [a]}\n") == (
        "response: auto-revoke on (disable, at most 2/hour), 1 protected pattern"
    )


def test_summary_hides_database_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    # `database` is a plain str in Settings (SQLAlchemy takes the password in the URL): only the summary hides it
    s = load(tmp_path, PROVIDER + f"database: postgresql://kw:{SECRET}@db.example.com/kw\n")
    assert "database: postgresql://db.example.com/kw" in summarize(s)


def test_no_secret_when_settings_are_dumped(tmp_path: Path) -> None:
    from monitor.config_model import adapter  # pydantic's own JSON of the settings, as a debug dump would be

    s = load(tmp_path, PROVIDER + f"api_token: {SECRET}-api\nleak_reports: {{hmac_secret: {SECRET}-hmac}}\n")
    dumped = adapter().dump_json(s).decode()
    assert SECRET not in dumped and "Secret('**********')" in dumped
    assert SECRET not in str(adapter().dump_python(s, mode="json"))


@pytest.mark.parametrize(
    "text",
    [
        PROVIDER + f"    admin_token_file: {SECRET}\n",  # both forms
        PROVIDER + "    keys: {prod-a: ''}\n",
        PROVIDER.replace("https://relay.example.com", f"https://u:{SECRET}@relay.example.com"),
        PROVIDER.replace("https://relay.example.com", f"ftp://u:{SECRET}@relay.example.com"),
        PROVIDER.replace("https://relay.example.com", f"https://u:{SECRET}@relay.example.com:99999"),
        PROVIDER + f"notify: {{urls: ['{SECRET}']}}\n",
        PROVIDER + f"notify: {{urls: ['json:/{SECRET}']}}\n",
        PROVIDER + f"api_token: '{SECRET}${{'\n",
        PROVIDER + f"api_token: '{SECRET}${{{SECRET}}}'\n",
        PROVIDER + f"api_token: [{SECRET}]\n",
        PROVIDER + f"api_token: {{{SECRET}: 1}}\n",
        PROVIDER + f'api_token: "{SECRET}\n',
        PROVIDER + f"database: {SECRET}\n",
    ],
)
def test_no_secret_in_errors(tmp_path: Path, text: str) -> None:
    err = error(tmp_path, text)
    assert SECRET not in str(err) and SECRET not in repr(err) and SECRET not in err.key
    # nor in a chained exception (pydantic's and PyYAML's errors quote their input)
    assert err.__cause__ is None and err.__context__ is None


# --- the example config ------------------------------------------------------------------------------------

EXAMPLE_ENV = {"LZ_ADMIN_TOKEN": "sk-lz", "PROD_WEBAPP_KEY": "sk-prod", "NEWAPI_ADMIN_TOKEN": "sk-na"}


def test_example_config_validates() -> None:
    s = load_settings(REPO / "keywatch.example.yaml", env=EXAMPLE_ENV)
    assert [p.name for p in s.providers] == ["lz", "newapi-main"]
    assert s.providers[0].keys["prod-webapp-api-2024-01"].reveal() == "sk-prod"
    assert s.notify.urls == ()  # needs no notify target
    assert summarize(s)


def test_example_config_validates_with_a_notify_target() -> None:
    env = EXAMPLE_ENV | {"KEYWATCH_NOTIFY_URL": "mailto://user:pass@smtp.example.com?to=ops@example.com"}
    s = load_settings(REPO / "keywatch.example.yaml", env=env)
    assert len(s.notify.urls) == 1


def test_example_config_documents_every_key() -> None:
    text = (REPO / "keywatch.example.yaml").read_text()
    # every key of the schema (routes' severities included); `<secret>_file` counts as its secret
    names = {row.path.rsplit(".", 1)[-1].removesuffix("[]") for row in rows(config.json_schema())}
    keys = {k for k in names if k.removesuffix("_file") == k or k.removesuffix("_file") not in names}
    assert {"poll_interval", "for", "warn_before", "critical", "hmac_secret"} <= keys
    missing = sorted(
        k for k in keys if not re.search(rf"(^|[\s{{,#]){re.escape(k)}(_file)?:", text, re.MULTILINE)
    )
    assert missing == []


# --- durations and business hours --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60),
        ("5m", 300),
        ("1h", 3600),
        ("14d", 14 * 86400),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1h30m", 5400),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400),
        ("90", 90),
        ("0.25", 0.25),
        (" 30s ", 30),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["5 minutes", "-1s", "", "1h 30m", "30m1h", "1h1h", "1y", "s", "1.s", "1H", "inf"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid duration '{text}' (use e.g. 30s, 5m, 1h, 14d)")):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds", [0, 0.5, 1, 59, 60, 90, 3600, 5400, 86400, 14 * 86400, 400 * 86400, 93784.005]
)
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 0.25, 90, 14 * 86400)] == ["0s", "250ms", "1m30s", "14d"]


def test_business_hours() -> None:
    hours = parse_business_hours("mon-fri 08:00-20:00 Europe/Berlin")
    assert hours.days == frozenset(range(5)) and (hours.start, hours.end) == (480, 1200)

    def at(text: str) -> float:
        return datetime.fromisoformat(text).astimezone(UTC).timestamp()

    assert hours.contains(at("2026-06-01T07:30:00+00:00"))  # Monday 09:30 in Berlin (CEST)
    assert not hours.contains(at("2026-06-01T05:30:00+00:00"))  # 07:30 in Berlin
    assert not hours.contains(at("2026-06-01T18:00:00+00:00"))  # 20:00 in Berlin: the end is exclusive
    assert not hours.contains(at("2026-06-06T10:00:00+00:00"))  # Saturday
    assert parse_business_hours("sat-sun 00:00-24:00 UTC").days == frozenset({5, 6})
    assert parse_business_hours("Mon,wed,FRI 09:00-17:00 UTC").days == frozenset({0, 2, 4})
    assert parse_business_hours("fri-mon,wed 09:00-17:00 UTC").days == frozenset({4, 5, 6, 0, 2})
    for bad in (
        "mon-fri 20:00-08:00 UTC",
        "mon-fri 08:00-24:30 UTC",
        "mon-fri 08:00-20:00",
        "mon- 08:00-20:00 UTC",
        "mon,,fri 08:00-20:00 UTC",
        "monday 08:00-20:00 UTC",
    ):
        with pytest.raises(ValueError, match="invalid business hours"):
            parse_business_hours(bad)
