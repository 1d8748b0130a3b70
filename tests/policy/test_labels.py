"""Label values are checked against the model before anything leaves a party: the scheduler
refuses, at submission, a job whose model does not fit the label values its worker recorded
for the table at upload; and a reader whose data flows into hetero_lr refuses a guest table
whose labels are not 0 or 1, before PSI (a table without a recorded profile)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fedbus.runtime import EnvelopePublisher
from fedflow.descriptors import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from fedscheduler.rpc import SchedulerCommandFailed
from fedscheduler.table_profiles import TableProfileRow
from fedschemas import PartyRef, new_envelope
from fedschemas.payloads import TableProfile

from tests.polling import wait_until
from tests.scheduler.conftest import Federation

from .conftest import hetero_lr_pipeline

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
GUEST, HOST = "9999", "10000"


def guest_folder(tmp_path: Path, relabel: dict[str, str]) -> Path:
    """The breast guest table with some labels changed (id -> new label)."""
    folder = tmp_path / "guest"
    folder.mkdir()
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        rows = list(csv.reader(src))
    label_at = rows[0].index("y")
    for row in rows[1:]:
        if row[0] in relabel:
            row[label_at] = relabel[row[0]]
    with (folder / "breast_hetero_guest.csv").open("w", newline="") as dst:
        csv.writer(dst).writerows(rows)
    return folder


def host_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir()
    shutil.copy(DATA / "breast_hetero_host.csv", folder)
    return folder


def test_a_reader_feeding_hetero_lr_refuses_labels_outside_0_and_1_before_psi(
    tmp_path: Path,
) -> None:
    # Prepare: three rows of the guest's table labelled 2
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        ids = [row[0] for row in list(csv.reader(src))[1:4]]
    guest = guest_folder(tmp_path, dict.fromkeys(ids, "2"))
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline())

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(pipeline, {GUEST: guest, HOST: host_folder(tmp_path)}, tmp_path / "work")

    # Assert: the guest's reader failed, naming the table, the values and the rule
    message = str(info.value)
    assert message.startswith("reader_0 failed at party 9999 (guest)")
    assert "label column 'y' has values outside {0, 1}" in message
    assert "2 (3 rows)" in message


def test_the_reader_learns_the_labels_only_where_the_model_needs_them() -> None:
    lr = Pipeline.from_yaml(hetero_lr_pipeline())
    psi_only = Pipeline.from_yaml(
        (DATA.parent / "pipelines" / "psi_eval.yaml").read_text(encoding="utf-8")
    )

    assert lr.params_for("reader_0", "guest", GUEST)["label_values"] == [0.0, 1.0]
    assert "label_values" not in lr.params_for("reader_0", "host", HOST)
    assert psi_only.params_for("reader_0", "guest", GUEST) == {"table": "breast_hetero_guest"}


# --- at submission: the scheduler's read model of the party's tables -------------------------


def send_profile(
    fed: Federation,
    party: str,
    table: str,
    labels: list[float] | None,
    classes: list[str] | None = None,
) -> None:
    """What the party's worker sends its scheduler when it stores `table` (`classes`: the
    names of a text label column's classes)."""
    me = PartyRef(party_id=party, role="local")
    profile = TableProfile(
        table=table,
        party_id=party,
        rows=569,
        label_column="y" if labels is not None else None,
        label_values=labels,
        label_classes=classes,
        uploaded_at=datetime.now(UTC),
    )
    envelope = new_envelope(
        profile,
        job_id="",
        component="data.tables",
        task_id="",
        attempt=0,
        source=me,
        destination=me,
        tag=f"table.profile.{table}",
        iteration=-1,
        seq=1,
        created_at=datetime.now(UTC),
    )
    EnvelopePublisher(fed.buses[party], me).send("svc.scheduler", envelope)


def recorded(fed: Federation, party: str, table: str) -> bool:
    with fed.schedulers[party].sessions() as session:
        return session.get(TableProfileRow, table) is not None


@pytest.mark.parametrize(
    ("classes", "found"),
    [(None, "2"), (["high", "low", "mid"], "2 = 'mid'")],
    ids=["numbers", "text"],
)
def test_a_job_whose_model_does_not_fit_the_recorded_labels_is_refused_at_submission(
    federation_factory: Callable[..., Federation], classes: list[str] | None, found: str
) -> None:
    # Prepare: the guest's worker reported three label values for its table (of a text label
    # column: three class names)
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["*"])])
    send_profile(fed, GUEST, "breast_hetero_guest", [0.0, 1.0, 2.0], classes)
    wait_until(lambda: recorded(fed, GUEST, "breast_hetero_guest"), 30, "the profile")

    # Execute
    fed.client(GUEST).submit(hetero_lr_pipeline(), job_id="job-3-classes")
    failed = fed.wait_state(GUEST, "job-3-classes", "failed")

    # Assert: refused by the guest itself, naming the values found; nothing ran, and the
    # host never heard of the job
    assert failed["reason"] == (
        "party 9999 refused the job: table breast_hetero_guest (read by reader_0): label "
        f"column 'y' has values outside {{0, 1}}, which the model its data flows into needs: "
        f"{found}"
    )
    assert fed.workers[GUEST].runs == [] and fed.workers[HOST].runs == []
    with pytest.raises(SchedulerCommandFailed):
        fed.job(HOST, "job-3-classes")


def test_binary_labels_and_tables_without_a_profile_pass_the_submission_check(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["*"])])
    send_profile(fed, GUEST, "breast_hetero_guest", [0.0, 1.0])
    send_profile(fed, HOST, "breast_hetero_host", None)  # the host's has no label: no model
    wait_until(lambda: recorded(fed, HOST, "breast_hetero_host"), 30, "the host's profile")
    wait_until(lambda: recorded(fed, GUEST, "breast_hetero_guest"), 30, "the profile")

    fed.client(GUEST).submit(hetero_lr_pipeline(), job_id="job-binary")

    fed.wait_state(GUEST, "job-binary", "success")


def hetero_linr_pipeline() -> str:
    return hetero_lr_pipeline().replace("type: hetero_lr", "type: hetero_linr")


def test_a_model_of_numbers_tells_the_reader_its_rule_and_the_reader_refuses_before_psi(
    tmp_path: Path,
) -> None:
    # Prepare: hetero_linr's guest takes numbers; the guest's table has no label column
    pipeline = Pipeline.from_yaml(hetero_linr_pipeline())
    guest = tmp_path / "guest"
    guest.mkdir()
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        rows = [[v for i, v in enumerate(row) if i != 1] for row in csv.reader(src)]  # no y
    with (guest / "breast_hetero_guest.csv").open("w", newline="") as dst:
        csv.writer(dst).writerows(rows)

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(pipeline, {GUEST: guest, HOST: host_folder(tmp_path)}, tmp_path / "work")

    # Assert: the reader learnt the rule (the host's reader nothing) and refused before PSI
    assert pipeline.params_for("reader_0", "guest", GUEST)["label_rules"] == [
        {"kind": "numeric", "names": False, "model": "hetero_linr"}
    ]
    assert "label_rules" not in pipeline.params_for("reader_0", "host", HOST)
    message = str(info.value)
    assert message.startswith("reader_0 failed at party 9999 (guest)")
    assert (
        "table breast_hetero_guest has no label column, but hetero_linr, which its data flows "
        "into, takes numeric labels (finite numbers)" in message
    )


@pytest.mark.parametrize(
    ("labels", "classes", "reason"),
    [
        (
            [0.0, 1.0, 2.0],
            ["high", "low", "mid"],
            ": hetero_linr takes numeric labels (finite numbers), but label column 'y' holds "
            "class names (high, low, mid), read as classes 0 .. 2: upload the target as numbers",
        ),
        (
            None,
            None,
            " has no label column, but hetero_linr, which its data flows into, takes numeric "
            "labels (finite numbers)",
        ),
    ],
    ids=["class-names", "no-label"],
)
def test_a_regression_on_class_names_or_on_no_label_is_refused_at_submission(
    federation_factory: Callable[..., Federation],
    labels: list[float] | None,
    classes: list[str] | None,
    reason: str,
) -> None:
    # Prepare: the guest's worker reported a text label column, or none
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["*"])])
    send_profile(fed, GUEST, "breast_hetero_guest", labels, classes)
    wait_until(lambda: recorded(fed, GUEST, "breast_hetero_guest"), 30, "the profile")

    # Execute
    fed.client(GUEST).submit(hetero_linr_pipeline(), job_id="job-linr")
    failed = fed.wait_state(GUEST, "job-linr", "failed")

    # Assert: refused by the guest before anything ran
    assert failed["reason"] == (
        "party 9999 refused the job: table breast_hetero_guest (read by reader_0)" + reason
    )
    assert fed.workers[GUEST].runs == [] and fed.workers[HOST].runs == []


# --- a classifier trained on a single class ----------------------------------------------------


def test_a_reader_feeding_a_classifier_refuses_a_single_class_before_psi(tmp_path: Path) -> None:
    # Prepare: every row of the guest's table labelled 1
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        ids = [row[0] for row in list(csv.reader(src))[1:]]
    guest = guest_folder(tmp_path, dict.fromkeys(ids, "1"))
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline())

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(pipeline, {GUEST: guest, HOST: host_folder(tmp_path)}, tmp_path / "work")

    # Assert: refused by the guest's reader, naming the one class and the model
    message = str(info.value)
    assert message.startswith("reader_0 failed at party 9999 (guest)")
    assert f"label column 'y' holds a single class (1 ({len(ids)} rows))" in message
    assert "but hetero_lr, which trains on it, needs at least 2 classes" in message


def test_only_a_reader_whose_rows_a_classifier_trains_on_must_hold_two_classes() -> None:
    # A second reader feeds hetero_lr's validate_data only: one class there is a valid
    # validation table; hetero_linr (numbers) asks for nothing
    validated = Pipeline.from_yaml(
        hetero_lr_pipeline()
        .replace("components:", "components:\n" + VALIDATION_READER, 1)
        .replace(
            "inputs: {data: psi_0.data}", "inputs: {data: psi_0.data, validate_data: psi_v.data}"
        )
    )
    linr = Pipeline.from_yaml(hetero_linr_pipeline())
    homo = Pipeline.from_yaml((DATA.parent / "pipelines" / "homo_lr.yaml").read_text())

    assert validated.params_for("reader_0", "guest", GUEST)["min_label_values"] == {
        "count": 2,
        "model": "hetero_lr",
    }
    assert "min_label_values" not in validated.params_for("reader_v", "guest", GUEST)
    assert "min_label_values" not in validated.params_for("reader_0", "host", HOST)
    assert "min_label_values" not in linr.params_for("reader_0", "guest", GUEST)
    # a horizontal model's client may hold a single class (label skew): not asked either
    homo_readers = [c for c in homo.components_in_order() if c.type == "reader"]
    assert homo_readers and all(
        "min_label_values" not in homo.params_for(c.name, role, party)
        for c in homo_readers
        for role, party in [("guest", GUEST), ("host", HOST)]
    )


VALIDATION_READER = """  - name: reader_v
    type: reader
    params:
      guest: {table: breast_hetero_guest}
      host: {table: breast_hetero_host}
  - name: psi_v
    type: psi
    inputs: {data: reader_v.data}
"""


def test_a_single_recorded_class_is_refused_at_submission(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["*"])])
    send_profile(fed, GUEST, "breast_hetero_guest", [1.0], ["malignant"])
    wait_until(lambda: recorded(fed, GUEST, "breast_hetero_guest"), 30, "the profile")

    fed.client(GUEST).submit(hetero_lr_pipeline(), job_id="job-one-class")
    failed = fed.wait_state(GUEST, "job-one-class", "failed")

    assert failed["reason"] == (
        "party 9999 refused the job: table breast_hetero_guest (read by reader_0): label "
        "column 'y' holds a single class (1), but hetero_lr, which trains on it, needs at "
        "least 2 classes"
    )
    assert fed.workers[GUEST].runs == []
