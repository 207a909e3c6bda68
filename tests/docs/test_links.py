"""The docs point only at what the repository holds: every relative link in README.md and
docs/*.md resolves to a file or folder of the repository (and a #fragment to a heading), and
nothing in README.md, docs/, monitor/ or alerts/ refers to design files kept outside it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SCANNED = sorted(
    p
    for p in [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*"),
        *(ROOT / "monitor").rglob("*"),
        *(ROOT / "alerts").rglob("*"),
    ]
    if p.is_file() and p.suffix in (".md", ".py", ".json", ".yaml", ".yml", ".txt")
)
# The design notes and references the project was built from live outside the repository: a
# reader of the repository cannot follow a pointer to them.
OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|DESIGN §")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MD_NAME = re.compile(r"[\w./-]*\w\.md\b")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """Markdown without code blocks and code spans: what is written there is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return _LINK.findall(prose(page.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup dropped, lower case, punctuation
    other than - and _ removed, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(page: Path) -> Iterator[str]:
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        yield target


def test_the_link_reader_reads_links() -> None:
    page = "[a](docs/x.md) ![b](img.png) [`c`](../monitor/) `[d](no.md)` [e](#f) [g](https://x.org)"
    assert _LINK.findall(prose(page)) == ["docs/x.md", "img.png", "../monitor/", "#f", "https://x.org"]
    assert slug("GET /api/v1/silences/{id}") == "get-apiv1silencesid"
    assert slug("Prometheus, Grafana and docker compose") == "prometheus-grafana-and-docker-compose"
    assert slug("[`monitor/providers/`](../monitor/providers/)") == "monitorproviders"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {rel(resolved)}")
    assert broken == []


@pytest.mark.parametrize("path", SCANNED, ids=rel)
def test_nothing_refers_to_design_files_outside_the_repository(path: Path) -> None:
    hits = [
        f"{rel(path)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


@pytest.mark.parametrize("path", SCANNED, ids=rel)
def test_every_markdown_file_named_is_in_the_repository(path: Path) -> None:
    """A page named in prose or a comment (`docs/security.md`, `providers.md §2`) must be one the
    repository has: next to the file that names it, or from the repository's root or docs/."""
    missing = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for m in _MD_NAME.finditer(line):
            name = m.group()
            if "://" in re.split(r"\s", line[: m.start()])[-1]:  # part of a URL
                continue
            if not any((base / name).is_file() for base in (path.parent, ROOT, ROOT / "docs")):
                missing.append(f"{rel(path)}:{n}: {name}")
    assert missing == []
