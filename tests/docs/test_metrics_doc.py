"""docs/metrics.md against a real daemon's /metrics: every family it exports is documented with
its type and labels, and every documented family is exported (metric names are a contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import METRIC_NAMES
from tests.docs.live import live_daemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# | `name` | type | `label`, `label` (or —) | unit | meaning |
_ROW = re.compile(r"^\| `(keywatch_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|")
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SERIES_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count")}
# Families with no sample until a scheduled job has run (the fixture runs none: it drives the
# poller by hand); every other family must have samples, so that its labels are checked.
AFTER_A_SCHEDULED_JOB = frozenset({"keywatch_job_last_success_timestamp_seconds"})


@dataclass(frozen=True, slots=True)
class Documented:
    kind: str
    labels: frozenset[str]


def documented() -> dict[str, Documented]:
    """The families table of docs/metrics.md."""
    out: dict[str, Documented] = {}
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            name, kind, label_cell = m.groups()
            assert name not in out, f"{name} is documented twice"
            out[name] = Documented(kind, frozenset(re.findall(r"`([a-z_]+)`", label_cell)))
    return out


def test_the_doc_table_parses() -> None:
    docs = documented()
    assert len(docs) >= 20, "the families table of docs/metrics.md changed shape; fix _ROW"
    assert all(d.kind in ("counter", "gauge", "histogram") for d in docs.values())


def test_the_declared_metric_names_are_the_documented_ones() -> None:
    assert set(METRIC_NAMES) == set(documented())


@pytest.fixture
async def scrape(tmp_path: Path) -> str:
    """/metrics of a daemon that polled once, then had one poll fail after a retry, so that
    every family (poll errors and retries included) has samples."""
    async with live_daemon(tmp_path, retries=1) as live:
        live.relay.faults.update(fail_next=2)
        report = await live.daemon.pollers["lz"].run_once()
        assert not report.ok and report.error_reason == "http_5xx"
        async with live.client() as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_every_exported_family_is_documented_with_its_type_and_back(scrape: str) -> None:
    exported = dict(_TYPE.findall(scrape))
    docs = {name: d.kind for name, d in documented().items()}
    assert sorted(set(exported) - set(docs)) == [], "exported but not in docs/metrics.md"
    assert sorted(set(docs) - set(exported)) == [], "in docs/metrics.md but not exported"
    assert exported == docs


async def test_every_family_has_samples_with_exactly_the_documented_labels(scrape: str) -> None:
    kinds = dict(_TYPE.findall(scrape))
    family_of: dict[str, str] = {}
    for name, kind in kinds.items():
        family_of[name] = name
        for suffix in _SERIES_SUFFIXES.get(kind, ()):
            family_of[name + suffix] = name
    seen: dict[str, set[str]] = {name: set() for name in kinds}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            seen[family_of[sample.name]].update(k for k in sample.labels if k != "le")
    without_samples = {name for name in kinds if not _has_samples(scrape, name)}
    assert without_samples <= AFTER_A_SCHEDULED_JOB, "give the live daemon what it takes to export these"
    docs = documented()
    wrong = {
        name: (sorted(labels), sorted(docs[name].labels) if name in docs else None)
        for name, labels in seen.items()
        if name not in without_samples
    }
    assert {n: v for n, v in wrong.items() if v[0] != v[1]} == {}


def _has_samples(body: str, name: str) -> bool:
    return re.search(rf"^{re.escape(name)}(_bucket|_sum|_count)?[{{ ]", body, re.MULTILINE) is not None
