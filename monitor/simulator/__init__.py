"""A simulated LLM relay on loopback, for the demo, the tests, the compose stack and the benchmarks.

The model (`SimulatedRelay`, built by `make_relay`) holds seeded tokens whose traffic follows
archetypes with hour-of-day and weekday seasonality, plus incidents (leaks, budget crossings),
fault knobs and hostile-relay modes (`hostile`). HTTP flavours are views onto it: `laozhang`,
`oneapi`, `newapi` and `openai`. `build_app`/`serve` also mount a simulator-only control API under
/_sim/ (see `control`)."""

from __future__ import annotations

from .faults import Faults, Outcome
from .history import HistoryRow
from .hostile import Hostile
from .hostilewire import FORGED_LOG_LINE
from .laozhang import LaozhangOptions, token_view
from .ledger import Event, EventLog
from .model import DEFAULT_ADMIN_TOKEN, SimulatedRelay, TruthRow, make_relay
from .newapi import DEFAULT_USER_ID, NewAPIOptions
from .oneapi import OneAPIOptions
from .openai import DEFAULT_PROJECT_ID, OpenAIOptions
from .profiles import LEAK_MODELS, MODEL_PRICES, Archetype
from .server import FLAVORS, SimServer, build_app, parse_listen, run_simulator, serve
from .simclock import SimClock
from .token import Leak, Limits, SimStatus, SimToken

__all__ = [
    "DEFAULT_ADMIN_TOKEN",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_USER_ID",
    "FLAVORS",
    "FORGED_LOG_LINE",
    "LEAK_MODELS",
    "MODEL_PRICES",
    "Archetype",
    "Event",
    "EventLog",
    "Faults",
    "HistoryRow",
    "Hostile",
    "LaozhangOptions",
    "Leak",
    "Limits",
    "NewAPIOptions",
    "OneAPIOptions",
    "OpenAIOptions",
    "Outcome",
    "SimClock",
    "SimServer",
    "SimStatus",
    "SimToken",
    "SimulatedRelay",
    "TruthRow",
    "build_app",
    "make_relay",
    "parse_listen",
    "run_simulator",
    "serve",
    "token_view",
]
