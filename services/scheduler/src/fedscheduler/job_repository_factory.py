"""`make_job_repository`: the repository for one unit of work.

- a SQLAlchemy Session       -> SqlJobRepository on it (the service's transaction)
- an InMemoryJobRepository   -> that repository (tests share one across units)
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from fedscheduler.in_memory_job_repository import InMemoryJobRepository
from fedscheduler.job_repository import JobRepository
from fedscheduler.sql_job_repository import SqlJobRepository


def make_job_repository(target: Session | InMemoryJobRepository) -> JobRepository:
    if isinstance(target, InMemoryJobRepository):
        return target
    if isinstance(target, Session):
        return SqlJobRepository(target)
    raise TypeError(f"no job repository for {type(target).__name__}")
