"""The scheduler's read model of this party's tables, kept from the control.table_profile its
workers send when they store one (fedworker.data): each table's rows and label values.

It lets the scheduler check a pipeline against the party's data before any component runs --
a model whose labels the table cannot give (3 classes for binary hetero_lr) is refused when the
job is submitted or proposed, naming the values found -- without ever reading the workers'
tables. A table the model does not know (stored before profiles, or its message not yet
here) is left to the reader's own check when the task runs (fedflow.components.reader).

One row per table, the newest `uploaded_at` wins (a replaced table's profile replaces the old
one; a late or repeated message changes nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedflow.components.base import LabelRule
from fedschemas import Envelope, Payload
from fedschemas.payloads import TableProfile
from sqlalchemy.orm import Mapped, Session, mapped_column

from fedscheduler.models import Base, UtcDateTime
from fedscheduler.pipeline import Pipeline

if TYPE_CHECKING:
    from fedscheduler.handlers import SchedulerContext


class TableProfileRow(Base):
    """What the party's worker last said about one of its tables."""

    __tablename__ = "scheduler_table_profiles"

    table_name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    label_column: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    label_values: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """JSON list of the distinct label values; None: no label column, or too many."""
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    label_classes: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """JSON list of a text label column's class names (class k's at index k); None: numbers."""


def record(session: Session, profile: TableProfile) -> bool:
    """Keep `profile` unless a newer one of the table is known; whether it was kept."""
    row = session.get(TableProfileRow, profile.table)
    if row is not None and row.uploaded_at >= profile.uploaded_at:
        return False
    if row is None:
        row = TableProfileRow(table_name=profile.table)
        session.add(row)
    row.rows = profile.rows
    row.label_column = profile.label_column
    row.label_values = None if profile.label_values is None else json.dumps(profile.label_values)
    row.uploaded_at = profile.uploaded_at
    row.label_classes = None if profile.label_classes is None else json.dumps(profile.label_classes)
    session.flush()
    return True


def handle_table_profile(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """control.table_profile (from this party's worker): keep it in the read model."""
    if not isinstance(payload, TableProfile):  # the consumer dispatches by type
        raise Reject(f"control.table_profile handler got {type(payload).__name__}")
    if envelope.source.party_id != ctx.party_id or payload.party_id != ctx.party_id:
        raise Reject(
            f"control.table_profile must come from this party's worker ({ctx.party_id}), not "
            f"from party {envelope.source.party_id} about party {payload.party_id}"
        )
    record(tx.require_session(), payload)


Profile = tuple[str | None, list[float] | None, list[str] | None]
"""(label column, label values, class names) of a table; label values None: not listed; class
names None: numeric labels."""


def profile_of(session: Session) -> Callable[[str], Profile | None]:
    """A lookup of the read model: None for a table it does not know."""

    def lookup(table: str) -> Profile | None:
        row = session.get(TableProfileRow, table)
        if row is None:
            return None
        values = None if row.label_values is None else json.loads(row.label_values)
        classes = None if row.label_classes is None else json.loads(row.label_classes)
        return row.label_column, values, classes

    return lookup


def label_problem(
    pipeline: Pipeline, party_id: str, profile: Callable[[str], Profile | None]
) -> str | None:
    """Why `party_id`'s tables cannot feed the models of `pipeline`: a reader whose data flows
    into a model that takes given labels (reader params `label_values` and `label_rules`,
    filled in by the pipeline) reads a table whose recorded labels do not fit them, or that
    has no label column. None when every such table fits or is not known here."""
    for spec, role in pipeline.tasks_for(party_id):
        ctype = spec.component_type
        if ctype.table_param is None:
            continue
        params = spec.params_for(role, party_id)
        allowed = params.get("label_values")
        rules = [
            (
                str(r.get("model", "the model its data flows into")),
                LabelRule(r["kind"], names=r["names"]),
            )
            for r in params.get("label_rules") or []
        ]
        at_least = params.get("min_label_values")
        if not allowed and not rules and not at_least:
            continue
        table = str(params[ctype.table_param])
        known = profile(table)
        if known is None:
            continue
        where = f"table {table} (read by {spec.name})"
        label_column, values, classes = known
        wanted = ", ".join(f"{v:g}" for v in sorted(allowed or []))
        if label_column is None:
            if allowed:
                return (
                    f"{where} has no label column, but the model its data flows into needs "
                    f"labels in {{{wanted}}}"
                )
            model, rule = rules[0]
            return (
                f"{where} has no label column, but {model}, which its data flows into, takes "
                f"{rule.expected()}"
            )
        outside = [v for v in values or [] if allowed and v not in allowed]
        if outside:
            found = ", ".join(_named(v, classes) for v in outside[:10])
            return (
                f"{where}: label column {label_column!r} has "
                f"values outside {{{wanted}}}, which the model its data flows into needs: "
                f"{found}"
            )
        for model, rule in rules:
            if classes is not None and not rule.takes_names():
                return f"{where}: " + rule.names_problem(model, label_column, classes)
            problem = None if values is None else rule.problem(values)
            if problem is not None:
                return (
                    f"{where}: label column {label_column!r} does not fit {model}, which {problem}"
                )
        if at_least and values is not None and len(values) < int(at_least["count"]):
            found = ", ".join(_named(v, classes) for v in values)
            return (
                f"{where}: label column {label_column!r} holds a single class ({found}), but "
                f"{at_least['model']}, which trains on it, needs at least {at_least['count']} "
                "classes"
            )
    return None


def _named(value: float, classes: list[str] | None) -> str:
    """A label value, with its class name for a text label column."""
    if classes is not None and float(value).is_integer() and 0 <= value < len(classes):
        return f"{value:g} = {classes[int(value)]!r}"
    return f"{value:g}"
