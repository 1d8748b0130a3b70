"""JobRepository contract: a job saved in one unit of work reads back the same in the next,
with its parties and every task row; what was changed but not saved is not stored. One suite,
subclassed per implementation; SQL runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fedscheduler.domain import Job, Party, Task
from fedscheduler.in_memory_job_repository import InMemoryJobRepository
from fedscheduler.job_repository import JobExists, JobRepository
from fedscheduler.job_repository_factory import make_job_repository
from fedscheduler.sql_job_repository import SqlJobRepository
from fedscheduler.store import open_database

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

Units = Callable[[], AbstractContextManager[JobRepository]]
"""Opens one unit of work (a transaction, committed at the end of the block)."""


def a_job(job_id: str = "job-1", *, state: str = "running", at: datetime = T0) -> Job:
    return Job(
        job_id=job_id,
        initiator="9999",
        pipeline_yaml="name: x\n",
        state=state,
        attempt=0,
        created_at=at,
        updated_at=at,
        heartbeat_seq=0,
        parties={
            "9999": Party("9999", ("guest",), "running", last_seen=at),
            "10000": Party("10000", ("host", "arbiter"), "waiting"),
        },
        tasks={
            ("reader_0", 0, "9999"): Task(
                "reader_0", 0, "9999", "reader", "running", at, started_at=at
            ),
            ("reader_0", 0, "10000"): Task("reader_0", 0, "10000", "reader", "waiting", at),
        },
    )


class JobRepositoryContract:
    """Subclasses provide the `units` fixture."""

    @pytest.fixture
    def units(self) -> Iterator[Units]:
        raise NotImplementedError

    def test_an_added_job_reads_back_whole(self, units: Units) -> None:
        # Prepare
        job = a_job()

        # Execute
        with units() as repo:
            repo.add(copy.deepcopy(job))
        with units() as repo:
            loaded = repo.get("job-1")

        # Assert
        assert loaded == job

    def test_an_unknown_job_is_none(self, units: Units) -> None:
        with units() as repo:
            assert repo.get("nope") is None
            assert repo.get("nope", lock=True) is None

    def test_adding_a_taken_id_is_refused(self, units: Units) -> None:
        with units() as repo:
            repo.add(a_job())
        with units() as repo, pytest.raises(JobExists):
            repo.add(a_job())

    def test_saved_changes_new_tasks_and_parties_are_stored(self, units: Units) -> None:
        # Prepare
        with units() as repo:
            repo.add(a_job())

        # Execute: a step moves the job, a party, a task, and adds rows of a new attempt
        with units() as repo:
            job = repo.get("job-1", lock=True)
            assert job is not None
            job.state, job.attempt, job.reason = "running", 1, None
            job.heartbeat_seq, job.heartbeat_at = 3, T0 + timedelta(seconds=5)
            job.parties["10000"].state = "running"
            job.parties["10000"].last_seen = T0 + timedelta(seconds=4)
            done = job.tasks[("reader_0", 0, "9999")]
            done.state, done.progress, done.outputs = "success", 1.0, {"data": "t/reader_0"}
            done.ended_at, done.status_seq = T0 + timedelta(seconds=3), 2
            job.tasks[("psi_0", 1, "9999")] = Task("psi_0", 1, "9999", "psi", "waiting", T0)
            job.parties["10001"] = Party("10001", ("host",), "waiting")
            repo.save(job)
            expected = copy.deepcopy(job)
        with units() as repo:
            loaded = repo.get("job-1")

        # Assert
        assert loaded == expected

    def test_changes_not_saved_are_not_stored(self, units: Units) -> None:
        # Prepare
        with units() as repo:
            repo.add(a_job())

        # Execute
        with units() as repo:
            job = repo.get("job-1", lock=True)
            assert job is not None
            job.state = "failed"
            job.tasks[("reader_0", 0, "9999")].state = "canceled"
        with units() as repo:
            loaded = repo.get("job-1")

        # Assert
        assert loaded == a_job()

    def test_open_jobs_are_listed_oldest_first(self, units: Units) -> None:
        # Prepare
        with units() as repo:
            repo.add(a_job("job-b", state="waiting", at=T0 + timedelta(seconds=2)))
            repo.add(a_job("job-a", state="running", at=T0 + timedelta(seconds=1)))
            repo.add(a_job("job-done", state="success", at=T0))

        # Execute
        with units() as repo:
            ids = repo.open_job_ids()

        # Assert
        assert ids == ["job-a", "job-b"]


class TestInMemoryJobRepository(JobRepositoryContract):
    @pytest.fixture
    def units(self) -> Iterator[Units]:
        shared = InMemoryJobRepository()

        @contextmanager
        def unit() -> Iterator[JobRepository]:
            yield make_job_repository(shared)

        yield unit


class SqlUnits:
    def make(self, url: str) -> Iterator[Units]:
        engine, sessions = open_database(url)

        @contextmanager
        def unit() -> Iterator[JobRepository]:
            with sessions.begin() as session:
                repo = make_job_repository(session)
                assert isinstance(repo, SqlJobRepository)
                yield repo

        yield unit
        engine.dispose()


class TestSqliteJobRepository(JobRepositoryContract, SqlUnits):
    @pytest.fixture
    def units(self, tmp_path: Path) -> Iterator[Units]:
        yield from self.make(f"sqlite:///{tmp_path / 'scheduler.db'}")


class TestPostgresJobRepository(JobRepositoryContract, SqlUnits):
    @pytest.fixture
    def units(self, pg_url: str) -> Iterator[Units]:
        yield from self.make(pg_url)
