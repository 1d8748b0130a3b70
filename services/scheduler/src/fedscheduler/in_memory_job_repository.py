"""InMemoryJobRepository: jobs in a dict, for tests of the domain and the service layer.

Supports everything JobRepository promises within one process: `get` hands out a copy, so a
job changed but not saved is not stored (as with SQL); `lock` is a no-op (one thread per
repository in tests). Nothing is durable.
"""

from __future__ import annotations

import copy

from fedscheduler.domain import OPEN, Job
from fedscheduler.job_repository import JobExists, JobRepository


class InMemoryJobRepository(JobRepository):
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def get(self, job_id: str, *, lock: bool = False) -> Job | None:
        job = self._jobs.get(job_id)
        return copy.deepcopy(job) if job is not None else None

    def add(self, job: Job) -> None:
        if job.job_id in self._jobs:
            raise JobExists(job.job_id)
        self._jobs[job.job_id] = copy.deepcopy(job)

    def save(self, job: Job) -> None:
        if job.job_id not in self._jobs:
            raise KeyError(f"job {job.job_id} was never added")
        self._jobs[job.job_id] = copy.deepcopy(job)

    def open_job_ids(self) -> list[str]:
        open_jobs = [j for j in self._jobs.values() if j.state in OPEN]
        return [j.job_id for j in sorted(open_jobs, key=lambda j: j.created_at)]
