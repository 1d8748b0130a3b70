"""The host's online features from an HTTP service of its own systems (the feature-lookup
adapter), instead of a table loaded into Redis (fedserving.features.FeatureStore).

Supports one request shape, which the host's feature service implements (docs/serving.md,
"The host's features"):

    POST <url>  {"ids": ["133", ...], "features": ["x0", "x1", ...]}
    200         {"rows": {"133": {"x0": 0.25, "x1": null, ...}, ...}}

An id the service does not know is left out of `rows` (-> 404 naming the party and the id at
the guest); null is a missing value (counted as 0, as offline); a requested feature left out of
a row, a value that is not a number, or a body of another shape is the service's fault (-> 503
naming the party and what was wrong). Extra headers (an API token of the host's own system)
come from the settings and are never logged.

Each lookup is bounded: `timeout_s` per attempt, at most `retries` more attempts (tenacity,
with a short jittered back-off) on a connection error, a timeout or a 5xx answer, and never
past `deadline_s` in all, so that the host answers (with a clear 503) before the guest's own
deadline runs out. A 4xx answer is not retried. The features never leave the host: the serving
service turns them into partial scores before it answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import structlog
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from fedserving.features import FeaturesMissing, NoFeatureSource
from fedserving.scoring import Floats

log = structlog.get_logger("fedserving")


class FeatureServiceError(NoFeatureSource):
    """The host's feature service did not answer usefully (-> 503 naming the party)."""


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"answered {status}: {text[:200]}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


class HttpFeatureSource:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.2,
        retries: int = 2,
        deadline_s: float = 0.4,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"feature service URL must be http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.deadline_s = deadline_s
        self._client = client or httpx.Client(headers=dict(headers or {}))

    def close(self) -> None:
        self._client.close()

    def _post(self, body: dict[str, Any]) -> Any:
        response = self._client.post(self.url, json=body, timeout=self.timeout_s)
        if response.status_code >= 500:
            raise _Retryable(response.status_code, response.text)
        if response.status_code != 200:
            raise FeatureServiceError(
                f"feature service {self.url} refused the lookup "
                f"({response.status_code}: {response.text[:200]})"
            )
        try:
            return response.json()
        except ValueError:
            raise FeatureServiceError(
                f"feature service {self.url} answered something that is not JSON"
            ) from None

    def _fetch(self, body: dict[str, Any]) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1) | stop_after_delay(self.deadline_s),
            wait=wait_random_exponential(multiplier=0.01, max=0.05),
            retry=retry_if_exception(_retryable),
            reraise=False,
        )
        try:
            return retrying(self._post, body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            attempts = exc.last_attempt.attempt_number
            reason = (
                f"timed out after {self.timeout_s:.3f} s"
                if isinstance(last, httpx.TimeoutException)
                else f"{type(last).__name__}: {last}"
            )
            log.warning("feature_service_failed", url=self.url, attempts=attempts, error=reason)
            raise FeatureServiceError(
                f"feature service {self.url} did not answer ({attempts} attempts; last: {reason})"
            ) from None

    def rows(self, ids: Sequence[str], names: Sequence[str]) -> Floats:
        """The features `names` of `ids` (rows in the order of ids), as FeatureStore.rows."""
        answer = self._fetch({"ids": list(ids), "features": list(names)})
        found = answer.get("rows") if isinstance(answer, dict) else None
        if not isinstance(found, dict):
            raise FeatureServiceError(
                f'feature service {self.url} answered without a "rows" object'
            )
        missing = [i for i in ids if i not in found]
        if missing:
            raise FeaturesMissing(missing)
        out = np.empty((len(ids), len(names)), dtype=np.float64)
        for r, row_id in enumerate(ids):
            row = found[row_id]
            if not isinstance(row, dict):
                raise FeatureServiceError(
                    f"feature service {self.url}: row {row_id!r} is not an object"
                )
            for c, name in enumerate(names):
                if name not in row:
                    raise FeatureServiceError(
                        f"feature service {self.url}: row {row_id!r} lacks feature {name!r}"
                    )
                out[r, c] = _number(row[name], row_id, name, self.url)
        return out


def _number(value: Any, row_id: str, name: str, url: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeatureServiceError(
            f"feature service {url}: {name!r} of row {row_id!r} is not a number ({value!r})"
        )
    number = float(value)
    if math.isinf(number):
        raise FeatureServiceError(f"feature service {url}: {name!r} of row {row_id!r} is infinite")
    return number
