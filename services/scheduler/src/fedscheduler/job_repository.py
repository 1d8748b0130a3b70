"""The job repository: where the service layer loads a job (with its parties and tasks) for
one step of the domain, and saves what the step changed.

A repository is one unit of work: the SQL one works inside the transaction its caller opened
(the inbox's, the RPC server's or the timer's), so a step's changes commit with the message's
done marker, or not at all. `get(job_id, lock=True)` also serialises the steps of one job
across threads (the consumer and the timer): on PostgreSQL it takes the job's row lock.

Implementations: InMemoryJobRepository (tests of the domain and the service layer, nothing
durable), SqlJobRepository (PostgreSQL in the stack, SQLite in the embedded default). One
contract suite runs against both (tests/scheduler/test_job_repository_contract.py).
"""

from __future__ import annotations

import abc

from fedscheduler.domain import Job


class JobExists(Exception):
    """`add` of a job id that is already stored."""


class JobRepository(abc.ABC):
    """Jobs as the domain sees them (`domain.Job`), loaded and saved whole."""

    @abc.abstractmethod
    def get(self, job_id: str, *, lock: bool = False) -> Job | None:
        """The job with its parties and every task row; None if there is no such job.

        With `lock`, no other unit of work changes the job until this one ends. The job
        returned is this unit's copy: changes to it are stored by `save`, never before.
        """

    @abc.abstractmethod
    def add(self, job: Job) -> None:
        """Store a new job (with its parties and tasks); JobExists if its id is taken."""

    @abc.abstractmethod
    def save(self, job: Job) -> None:
        """Store the changes made to a job this unit got or added: its fields, its parties'
        and tasks' fields, and new parties and tasks (nothing is ever deleted)."""

    @abc.abstractmethod
    def open_job_ids(self) -> list[str]:
        """Ids of the jobs that are waiting or running, oldest first (the timer's work)."""
