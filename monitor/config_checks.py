"""The config rules that span keys: each runs once its section's keys are valid, and raises a
KeyProblem naming the key to fix."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from monitor.config_apprise import config_tags
from monitor.config_fields import AppriseUrl, KeyProblem, type_name
from monitor.secret import Secret
from monitor.settings import Notify, NotifyTarget, ProviderSettings, Settings

__all__ = ["CHECKS", "SHORTCUTS"]


def _settings(s: Settings, data: Mapping[str, Any]) -> Settings:
    if not s.providers:
        raise KeyProblem(("providers",), "at least one provider is required")
    names: set[str] = set()
    for i, p in enumerate(s.providers):
        if p.name in names:
            raise KeyProblem(("providers", i, "name"), f"duplicate provider name '{p.name}'")
        names.add(p.name)
    return s


def _provider(p: ProviderSettings, data: Mapping[str, Any]) -> ProviderSettings:
    if p.kind == "newapi" and p.user_id is None:
        raise KeyProblem(("user_id",), "required for kind newapi (the New-Api-User header)")
    if p.kind == "openai" and not p.project_id:
        raise KeyProblem(("project_id",), "required for kind openai")
    return p


def _notify(n: Notify, data: Mapping[str, Any]) -> Notify:
    """Targets with an empty URL are none. Every routed tag must reach a target: Apprise's `all` tag
    matches any target, a target tagged `always` gets everything; otherwise notify() would find no
    target, and a notification with no target is a config error. With no targets at all, alerts are
    only logged."""
    targets = tuple(t for t in n.urls if t.url.reveal().strip())
    # Tags of the targets in an apprise_config file come from Apprise's own parser. A file that
    # includes other configs has tags we cannot know here: then the route check is skipped.
    try:
        file_tags = [] if n.apprise_config is None else config_tags(n.apprise_config)
    except ValueError as e:
        raise KeyProblem(("apprise_config",), str(e)) from None
    tag_sets = [frozenset(t.tags) for t in targets] + (file_tags or [])
    if file_tags is not None and tag_sets:
        given = data.get("routes")
        for severity, tags in n.routes.items():
            for tag in tags:
                if tag != "all" and not any(tag in t or "always" in t for t in tag_sets):
                    set_here = isinstance(given, Mapping) and given.get(severity) is not None
                    hint = "" if set_here else " (a default route: set it, [] to log only)"
                    raise KeyProblem(("routes", severity), f"tag '{tag}' matches no notify target{hint}")
    return dataclasses.replace(n, urls=targets)


def _bare_url(url: object) -> NotifyTarget:
    """A `urls` entry that is only a URL: a target without tags."""
    if not isinstance(url, str):
        raise KeyProblem((), f"expected a mapping, got {type_name(url)}")
    return NotifyTarget(url=AppriseUrl().check(Secret(str(url)), None))  # its ValueError is the reason


# section -> its check, given the validated section and the mapping it was read from
CHECKS: Final[dict[type, Callable[[Any, Mapping[str, Any]], Any]]] = {
    Settings: _settings,
    ProviderSettings: _provider,
    Notify: _notify,
}
# section -> how it reads a value that is not a mapping
SHORTCUTS: Final[dict[type, Callable[[object], Any]]] = {NotifyTarget: _bare_url}
