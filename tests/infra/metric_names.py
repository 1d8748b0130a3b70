"""Which metric names a PromQL expression reads, and which names the services really expose.

Used by the dashboard and alert tests: a query that names a metric nobody exports draws an
empty panel forever (or an alert that can never fire), and nothing else would notice.
"""

from __future__ import annotations

import importlib
import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Metric, ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

# Series Prometheus itself writes for every target (never exported by a service).
PROMETHEUS_SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)

# PromQL words that look like identifiers but name no metric. Functions and aggregations are
# recognised by the "(" that follows them, so only the operators and modifiers are listed.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
# An identifier not glued to a digit or a dot (so the "e3" of 1e3 and the "m" of 5m are not
# taken for metric names).
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed in it)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation call, or an operator
        names.add(word)
    return names


def variable_query_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query: label_values(<selector>, label),
    label_values(label) (no metric), or a plain PromQL query (query_result(...) included)."""
    match = _LABEL_VALUES.match(query)
    if not match:
        return metric_names(query)
    args = _STRING.sub('""', match.group(1))
    # The last top-level comma separates the selector from the label name.
    depth, split = 0, -1
    for index, char in enumerate(args):
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif char == "," and depth == 0:
            split = index
    if split < 0:
        return set()  # label_values(label): values of a label over all series
    return metric_names(args[:split])


def exposition_names(family: Metric) -> set[str]:
    """Every series name a metric family appears under when Prometheus scrapes it, whether or
    not it has samples yet (a labelled counter has none until its first .labels().inc())."""
    name = family.name
    names = {sample.name for sample in family.samples}
    if family.type == "counter":
        base = name.removesuffix("_total")
        names |= {f"{base}_total", f"{base}_created"}
    elif family.type == "histogram":
        names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    elif family.type == "summary":
        names |= {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    elif family.type == "info":
        names.add(f"{name}_info")
    else:  # gauge, stateset, unknown
        names.add(name)
    return names


def registry_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names |= exposition_names(family)
    return names


# The metric classes of the services (docs: the metric contract of issue #7). Each takes the
# service's CollectorRegistry; a class missing here means the metrics it should carry are not
# exported at all.
SERVICE_METRIC_CLASSES: tuple[tuple[str, str], ...] = (
    ("fedgateway.metrics", "GatewayMetrics"),
    ("fedscheduler.metrics", "SchedulerMetrics"),
    ("fedworker.metrics", "WorkerMetrics"),
    ("fedaudit.metrics", "AuditMetrics"),
    ("fedserving.metrics", "ServingMetrics"),
    ("fedbus.metrics", "BusMetrics"),
    ("fedcommon.http", "HttpMetrics"),
)


def service_metric_names() -> tuple[set[str], list[str]]:
    """(series names the services' metric classes register, the classes that are missing)."""
    names: set[str] = set()
    missing: list[str] = []
    for module_name, class_name in SERVICE_METRIC_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{module_name}.{class_name} ({exc})")
            continue
        registry = CollectorRegistry()
        cls(registry=registry)
        names |= registry_names(registry)
    return names, missing


def process_metric_names() -> set[str]:
    """The process_* series prometheus_client's ProcessCollector exports on Linux."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry_names(registry)


def scraped_names(url: str, timeout: float = 10.0) -> set[str]:
    """Series names in a live Prometheus text exposition."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= exposition_names(family)
    return names


def unknown_names(used: Iterable[str], known: set[str]) -> list[str]:
    return sorted(set(used) - known - PROMETHEUS_SYNTHETIC)
