"""A server killed -9 in the middle of a job and started again: the job ends as if nothing had
happened. Both parties run on a RabbitMQ node, a PostgreSQL cluster and a Redis server of the
suite's own (tests/faults/servers.py), never the shared ones other tests use.

- RabbitMQ: every service loses its connection; messages published before the kill were
  confirmed onto durable quorum queues and come back with the node; unacked deliveries are
  delivered again and the inboxes drop what was already applied.
- PostgreSQL: every open transaction is lost; a message whose handling did not commit is
  redelivered and handled once (the inbox's done marker commits with the handler's effects).
- Redis (no persistence): the inboxes' cached done markers are gone; PostgreSQL's markers still
  stop a redelivered message from being applied twice.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import Result, assert_as_undisturbed, dead_letters, run_with_fault
from tests.faults.servers import OwnPostgres, OwnRabbitMQ, OwnRedis
from tests.faults.stack import FaultStack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_broker_killed_mid_job_and_restarted_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, own_rabbitmq: OwnRabbitMQ, undisturbed: Result
) -> None:
    # Execute: kill -9 the parties' broker node a few rounds in, start it on the same data
    def broker_crash() -> None:
        own_rabbitmq.kill()
        own_rabbitmq.start()

    run = run_with_fault(stack, broker_crash, label="broker")

    # Assert
    assert own_rabbitmq.starts == 2
    assert_as_undisturbed(stack, run, undisturbed)
    # No message of the job dead-lettered, by the services or by the broker's own delivery
    # limit: the relay's one consumer per peer takes one delivery per crash (fedgateway.relay).
    assert dead_letters(stack, run.job_id) == {}


def test_postgres_killed_mid_job_and_restarted_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, own_postgres: OwnPostgres, undisturbed: Result
) -> None:
    # Execute: kill -9 the parties' PostgreSQL a few rounds in; it recovers from its WAL
    def database_crash() -> None:
        own_postgres.kill()
        own_postgres.start()

    run = run_with_fault(stack, database_crash, label="postgres")

    # Assert
    assert own_postgres.starts == 2
    assert_as_undisturbed(stack, run, undisturbed)
    assert dead_letters(stack, run.job_id) == {}


def test_redis_restarted_empty_mid_job_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, own_redis: OwnRedis, undisturbed: Result
) -> None:
    # Execute: kill -9 the parties' Redis a few rounds in; it comes back with no keys
    def cache_loss() -> None:
        own_redis.kill()
        own_redis.start()

    run = run_with_fault(stack, cache_loss, label="redis")

    # Assert
    assert own_redis.starts == 2
    assert_as_undisturbed(stack, run, undisturbed)
    assert dead_letters(stack, run.job_id) == {}
