"""Data-flow rules: what a federation message carries, against its declared form and the keys
of its job.

- data.form: kind, blob format, array dtype and shape (named dims bound per sender on first
  use, "c"/"p" checked against the announced keys' widths), seq and iteration, as the declared
  MessageRule says (the same rule ProtocolGuard enforces inside the components);
- data.key_*: a Paillier public key's width against this party's policy floor and the job's
  declared key_bits, its readability, and its fingerprint pinned per job, component and party;
- data.ciphertext_* (rules/ciphertexts.py): every ciphertext c of a ciphertext_vector in
  (0, n^2) for the key it is under (the decrypting party's when the rule names one, else some
  key of the component), != 1, coprime to every key's n, and never seen before in the job;
- data.nonfinite: NaN or infinity in a floating-point array;
- data.decrypted_bounds: this party's worker reporting (report.decrypt_check) plaintexts a
  peer chose (decrypted here, or a masked answer decoded here) that were NaN, infinite or
  outside the agreed bound;
- data.profile_drift: a table read for a job (report.column_stats from this party's worker)
  whose column has far more missing values, or a far wider range, than the table's recorded
  profile, or lacks a recorded column. The profile is what the last statistics component run
  on the table reported (record_profile; one run on a subset of the rows only widens it),
  else the table's first audited read.
Ciphertext and non-finite checks need the payload, so they run live only; the form, key and
decrypted-bounds checks run from the recorded facts too (post-hoc).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from fedflow.descriptors import MessageRule, Pipeline, PipelineError
from fedflow.pipeline import ComponentSpec
from fedflow.protocol import NONE, UNBOUNDED_SEQ, parse_shape

from fedaudit.facts import key_modulus
from fedaudit.rules.catalogue import Finding
from fedaudit.rules.state import AuditPolicy, ComponentView, JobView, Observation

HE_DIMS = ("c", "p")


def check_form(
    obs: Observation, rule: MessageRule, cv: ComponentView, policy: AuditPolicy
) -> list[Finding]:
    facts, record = obs.facts, obs.record
    where = f"{record['tag']!r} ({rule.direction}) of {cv.name}"
    problems: list[str] = []
    iteration, seq = int(record["iteration"]), int(record["seq_no"])
    if rule.per_iteration and iteration < 0:
        problems.append(f"{where} is per iteration; iteration {iteration} given")
    if not rule.per_iteration and iteration != -1:
        problems.append(f"{where} is sent once; iteration {iteration} given")
    if rule.max_seq != UNBOUNDED_SEQ and not 0 <= seq <= rule.max_seq:
        problems.append(f"{where} allows seq 0..{rule.max_seq}, got {seq}")
    kind = facts.get("kind")
    if kind not in rule.kinds:
        problems.append(f"{where} allows kinds {', '.join(rule.kinds)}, got {kind!r}")
    blob_format = facts.get("blob_format")
    if blob_format is not None and blob_format not in rule.blob_formats:
        problems.append(
            f"{where} allows blob formats {list(rule.blob_formats)}, got {blob_format!r}"
        )
    shape = facts.get("shape")
    if shape is not None:
        problems += _shape_problems(
            where, rule, [int(d) for d in shape], str(facts.get("dtype")), obs.sender, cv
        )
    return [policy.finding("data.form", obs.sender, p) for p in problems[:1]]


def _shape_problems(
    where: str, rule: MessageRule, shape: list[int], dtype: str, sender: str, cv: ComponentView
) -> list[str]:
    if rule.shape == NONE:
        return [f"{where} carries no array; got one of shape {tuple(shape)}"]
    if rule.dtypes and dtype not in rule.dtypes:
        return [f"{where} allows dtypes {', '.join(rule.dtypes)}, got {dtype}"]
    dims = parse_shape(rule.shape)
    if dims is None:
        return []
    if len(dims) != len(shape):
        return [f"{where} must have shape {rule.shape}, got {tuple(shape)}"]
    for dim, length in zip(dims, shape, strict=True):
        if dim == "*":
            continue
        if isinstance(dim, int):
            if dim != length:
                return [f"{where} must have shape {rule.shape}, got {tuple(shape)}"]
            continue
        if dim in HE_DIMS:
            widths = _he_widths(cv, dim)
            if widths and length not in widths:
                return [
                    f"{where}: {dim} = {length} limbs, but the component's keys give "
                    f"{sorted(widths)}"
                ]
            continue
        known = cv.dims.setdefault((sender, dim), length)
        if known != length:
            return [
                f"{where} must have shape {rule.shape} with {dim} = {known}, got {tuple(shape)}"
            ]
    return []


def _he_widths(cv: ComponentView, dim: str) -> set[int]:
    # limbs of n^2 ("c") and of n ("p"), from each announced key's width
    bits = set(cv.key_widths.values())
    return {(2 * b + 63) // 64 if dim == "c" else (b + 63) // 64 for b in bits if b > 0}


def check_key(
    obs: Observation, view: JobView, cv: ComponentView, policy: AuditPolicy
) -> list[Finding]:
    facts, sender = obs.facts, obs.sender
    bits, fingerprint = int(facts.get("key_bits", 0)), str(facts.get("key_fp", ""))
    found: list[Finding] = []
    if bits == 0:
        return [
            policy.finding(
                "data.key_unreadable",
                sender,
                f"party {sender}'s public_key of {cv.name} is not a Paillier public key",
            )
        ]
    pinned = cv.keys.setdefault(sender, fingerprint)
    if pinned != fingerprint:
        found.append(
            policy.finding(
                "data.key_changed",
                sender,
                f"party {sender} announced a second key for {cv.name} (fingerprint "
                f"{fingerprint[:16]}, pinned {pinned[:16]})",
            )
        )
    cv.key_widths[sender] = bits
    declared = cv.key_bits.get(sender)
    floor = policy.min_key_bits
    if bits < floor:
        found.append(
            policy.finding(
                "data.key_below_policy",
                sender,
                f"party {sender} announced a {bits}-bit key for {cv.name}; this party's floor "
                f"is {floor} bits",
            )
        )
    elif (declared is not None and bits != declared) or (declared is None and bits % 8):
        want = (
            f"the declared {declared} bits" if declared is not None else "a whole number of bytes"
        )
        found.append(
            policy.finding(
                "data.key_width",
                sender,
                f"party {sender} announced a {bits}-bit key for {cv.name}, not {want}",
            )
        )
    payload = obs.payload
    if payload is not None and payload.blob is not None:
        with contextlib.suppress(ValueError):
            cv.moduli[sender] = key_modulus(payload.blob)
    return found


def check_finite(obs: Observation, policy: AuditPolicy, component: str) -> list[Finding]:
    payload: Any = obs.payload
    array = getattr(payload, "array", None)
    if array is None or array.dtype.kind not in "fc":
        return []
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if not bad:
        return []
    return [
        policy.finding(
            "data.nonfinite",
            obs.sender,
            f"{obs.record['tag']!r} of {component}: {bad} NaN or infinite value(s)",
        )
    ]


def check_decrypted(obs: Observation, policy: AuditPolicy) -> list[Finding]:
    """This party's worker's check of plaintexts a peer chose (report.decrypt_check): what it
    decrypted as the key holder (the peer chose the ciphertexts), or the peer's answer to a
    masked decryption as it decoded it (the peer chose the residues). Any NaN, infinite or
    out-of-bound plaintext is the peer's doing, so the finding names the peer."""
    facts = obs.facts
    if obs.sender != policy.party_id:
        return []
    nan, inf, out = (int(facts.get(k, 0)) for k in ("nan", "infinite", "out_of_bound"))
    if not nan + inf + out:
        return []
    parts = [
        f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "infinite"), (out, "out of bound")) if n
    ]
    record = obs.record
    return [
        policy.finding(
            "data.decrypted_bounds",
            str(facts.get("peer", "")),
            f"{facts.get('checked_tag')!r} of {record['component']} from party "
            f"{facts.get('peer')} (iteration {record['iteration']}): of {facts.get('count')} "
            f"plaintexts decrypted or decoded here, {', '.join(parts)} (bound: "
            f"{facts.get('bound')})",
        )
    ]


TableProfile = dict[str, tuple[float, float | None, float | None]]
"""Column -> (share of missing values, min, max) of a table's recorded profile."""

NULL_JUMP: Final = 0.5
"""A column's missing share may grow by less than this over its recorded share (and may not
become wholly missing where it was not)."""
RANGE_FACTOR: Final = 100.0
"""A column's values may fall outside its recorded [min, max] by less than this many times
the recorded scale (max - min, or the largest magnitude for a constant column, or 1)."""


def check_profile(
    obs: Observation, profiles: dict[str, TableProfile], policy: AuditPolicy
) -> list[Finding]:
    """A table read for a job against the table's recorded profile: the first audited read of
    a table records it (no finding); a later read whose column broke it is data.profile_drift.
    Only this party's worker reads this party's tables."""
    facts = obs.facts
    if obs.sender != policy.party_id:
        return []
    table = str(facts.get("table", ""))
    read = _columns(facts)
    recorded = profiles.get(table)
    if recorded is None:
        profiles[table] = read
        return []
    problems = [
        p
        for name, before in recorded.items()
        if (p := _drift(name, before, read.get(name))) is not None
    ]
    if not problems:
        return []
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    shown = "; ".join(problems[:5]) + more
    return [
        policy.finding(
            "data.profile_drift",
            policy.party_id,
            f"table {table} read by {obs.record['component']}: {shown}",
        )
    ]


ROW_SUBSETS: Final = frozenset({"psi", "data_split"})
"""Component types whose table output holds rows of their input with the values unchanged: a
statistics component behind them still profiles the table a reader read."""
PROFILER: Final = "statistics"


class ProfiledTables(dict[str, str]):
    """Party -> the table a statistics component profiles there, and `subset`: whether the
    component's input passed through psi or data_split, so that it saw only some of the
    table's rows (its ranges can be narrower, its missing shares other, than the table's)."""

    def __init__(self, tables: Mapping[str, str], *, subset: bool) -> None:
        super().__init__(tables)
        self.subset = subset


def profiled_tables(pipeline_yaml: str | Pipeline) -> dict[str, dict[str, str]]:
    """Each statistics component of the pipeline whose input traces back to a reader through
    ROW_SUBSETS only -> {party: the table that reader reads there} (a ProfiledTables). Its
    report.column_stats is then that table's profile (record_profile); one behind any other
    component (scaled, imputed, binned values) profiles no table. `pipeline_yaml` may be the
    Pipeline already parsed from it."""
    if isinstance(pipeline_yaml, Pipeline):
        pipeline = pipeline_yaml
    else:
        try:
            pipeline = Pipeline.from_yaml(pipeline_yaml)
        except PipelineError:
            return {}
    specs = {spec.name: spec for spec in pipeline.components_in_order()}
    found: dict[str, dict[str, str]] = {}
    for spec in specs.values():
        if spec.type != PROFILER:
            continue
        behind = _reader_behind(specs, spec)
        if behind is None:
            continue
        reader, subset = behind
        tables = {
            task.party_id: reader.params_for(task.role, task.party_id).get("table")
            for task in reader.tasks
        }
        found[spec.name] = ProfiledTables(
            {p: t for p, t in tables.items() if isinstance(t, str)}, subset=subset
        )
    return found


def _reader_behind(
    specs: Mapping[str, ComponentSpec], spec: ComponentSpec
) -> tuple[ComponentSpec, bool] | None:
    """The reader `spec` takes its data from through ROW_SUBSETS only, and whether any of
    those lay between them."""
    ref, seen = spec.inputs.get("data"), set()
    while ref is not None and ref.component not in seen:
        seen.add(ref.component)
        upstream = specs.get(ref.component)
        if upstream is None or upstream.type not in ROW_SUBSETS | {"reader"}:
            return None
        if upstream.type == "reader":
            return upstream, len(seen) > 1
        ref = upstream.inputs.get("data")
    return None


def record_profile(
    obs: Observation,
    tables: Mapping[str, str],
    profiles: dict[str, TableProfile],
    policy: AuditPolicy,
) -> list[Finding]:
    """A statistics component's output (report.column_stats from this party's worker) as the
    profile of the table it ran on (`tables`: party -> table, from profiled_tables): its
    columns replace those of the recorded profile (the first read's, or an earlier run's);
    columns it did not profile keep theirs. A run on a subset of the rows (behind psi or
    data_split: ProfiledTables.subset) only widens a recorded column, to the union of the two
    ranges and the larger missing share: a subset's range lies inside the table's, so taken as
    the profile it would flag the table's own values at its next whole read (a heavy tail
    the sample missed). Judges nothing: a read in the same job was judged against the profile
    before it."""
    table = tables.get(policy.party_id)
    if obs.sender != policy.party_id or table is None:
        return []
    profile = profiles.setdefault(table, {})
    columns = _columns(obs.facts)
    if isinstance(tables, ProfiledTables) and tables.subset:
        columns = {
            name: _widened(profile[name], seen) if name in profile else seen
            for name, seen in columns.items()
        }
    profile.update(columns)
    return []


def _widened(
    before: tuple[float, float | None, float | None], seen: tuple[float, float | None, float | None]
) -> tuple[float, float | None, float | None]:
    """The recorded column widened by what a subset of the rows showed."""
    lows = [v for v in (before[1], seen[1]) if v is not None]
    highs = [v for v in (before[2], seen[2]) if v is not None]
    return (
        max(before[0], seen[0]),
        min(lows) if lows else None,
        max(highs) if highs else None,
    )


def _columns(facts: Mapping[str, Any]) -> TableProfile:
    return {str(c[0]): (float(c[1]), _num(c[2]), _num(c[3])) for c in facts.get("columns", [])}


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _drift(
    name: str,
    before: tuple[float, float | None, float | None],
    now: tuple[float, float | None, float | None] | None,
) -> str | None:
    if now is None:
        return f"column {name} of the recorded profile is missing"
    was_null, low, high = before
    null, new_low, new_high = now
    if null >= 1.0 > was_null:
        return f"column {name} is all missing (recorded {was_null:.0%})"
    if null - was_null >= NULL_JUMP:
        return f"column {name} is {null:.0%} missing (recorded {was_null:.0%})"
    if low is None or high is None or new_low is None or new_high is None:
        return None
    scale = (high - low) or max(abs(low), abs(high)) or 1.0
    if new_low < low - RANGE_FACTOR * scale or new_high > high + RANGE_FACTOR * scale:
        return (
            f"column {name} spans [{new_low:.6g}, {new_high:.6g}] (recorded [{low:.6g}, "
            f"{high:.6g}])"
        )
    return None
