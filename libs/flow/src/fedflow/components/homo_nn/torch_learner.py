"""homo_nn's PyTorch backend: a module named in the pipeline by import path, as a Learner over
homo_lr's secure-aggregation rounds (the same client and aggregator code as the numpy network).

The pipeline's `model: package.module:factory` names a callable; factory(features) returns a
torch.nn.Module that maps a (rows, features) tensor to one logit per row ((rows,) or
(rows, 1)). Every party builds it the same way and converts it to float64, so its parameters,
in `module.parameters()` order and each flattened row-major
(torch.nn.utils.parameters_to_vector), are the vector that is securely summed; the model table
has one row per value, `torch.<parameter name>.<index>`.

The start is the module's own initialisation under torch.manual_seed(seed), inside
torch.random.fork_rng so the process's generator is left as it was, and under a lock (tasks of
one worker run in threads, and share that generator). The forward pass must be deterministic
(no dropout or other sampling in training mode): a restarted client recomputes its update.

Local training is torch.optim.SGD (learning_rate) on the mean log loss (BCEWithLogits) over
mini-batches in homo_lr's batch order (seeded by (seed, round, client id) and the epoch), plus
(alpha / 2) times the squared norm of every parameter of two or more dimensions (weights, not
biases, as the numpy network's penalty) and FedProx's (mu / 2) ||w - w_r||^2. So a module with
the numpy network's shape trains to the numpy network's weights
(tests/homo/test_homo_nn_torch.py).
A restarted client must recompute the same update (the resume rule): training, loss and scores
run in float64 on one intra-op thread (`one_thread`), deterministic for these operations and
independent of the machine's core count. One thread is also the faster for the small modules
this is for: two epochs over breast's 100-row host took 0.16 s on one thread and 3.1-9.1 s on
torch's default two, on this project's shared 2-core machine at load 17 (the threads wait on
each other); the worker's parallelism is across tasks.

torch is an optional extra (fedmq-flow[torch], pinned to the CPU build): `require_torch` refuses
clearly, naming the party's missing install, when a pipeline asks for a module and torch is not
there; the built-in network never imports it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.components.homo_nn.params import HomoNnParams
from fedflow.import_path import find_module, split_import_path
from fedflow.tables import Table

if TYPE_CHECKING:
    import torch

_SEEDED = threading.Lock()
"""torch's default generator is one per process: two tasks of one worker building modules at
once would interleave their draws and start from other weights than their seed's."""
PREFIX = "torch."
"""Row ids of a PyTorch module's model table start with this."""
EXTRA = "fedmq-flow[torch] (torch==2.13.0, the CPU build)"


class TorchMissing(RuntimeError):
    """A pipeline names a PyTorch module and torch is not installed here."""


class ModelError(ValueError):
    """The import path does not give a usable module (not found, not a module, wrong output)."""


def require_torch(path: str, where: str) -> Any:
    """The torch package; TorchMissing saying what to install when it is not importable."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise TorchMissing(
            f"homo_nn: model {path!r} is a PyTorch module, but torch is not installed {where}: "
            f"install {EXTRA}, or leave out `model` for the built-in numpy network"
        ) from exc


def factory_of(path: str, where: str) -> Callable[[int], Any]:
    """The callable at `path`: ModelError when its module is not there, TorchMissing without
    torch, then ModelError when the module does not import or `attr` is not callable.

    Whose paths may be imported at all is the policy's to decide, before the task runs
    (fedflow.policy, `allow_code`); here the path must be `package.module:attr`, and its module
    must be found without running any code (fedflow.import_path.find_module) before it is
    imported, so that a path that is not there is refused with nothing along it executed."""
    try:
        module_name, attr = split_import_path(path)
    except ValueError as exc:
        raise ModelError(f"homo_nn: model {exc}") from None
    if find_module(module_name) is None:
        raise ModelError(
            f"homo_nn: model {path!r} cannot be imported {where}: no module {module_name!r} "
            "is installed or on the worker's path (nothing was imported)"
        )
    require_torch(path, where)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"homo_nn: model {path!r} cannot be imported {where}: {exc}") from exc
    if not callable(factory):
        raise ModelError(f"homo_nn: model {path!r} is not callable")
    return factory  # type: ignore[no-any-return]


def build(path: str, features: int, seed: int, where: str) -> torch.nn.Module:
    """factory(features) of `path` in float64, initialised under `seed` (module docstring)."""
    factory = factory_of(path, where)
    torch = require_torch(path, where)
    with _SEEDED, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory(features)
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"homo_nn: model {path!r} returned {type(module).__name__}, not a torch.nn.Module"
        )
    module = module.double()
    if not any(True for _ in module.parameters()):
        raise ModelError(f"homo_nn: model {path!r} has no parameters to train")
    return module


_THREADS = threading.Lock()
_inside: list[int] = [0, 0]
"""[blocks in one_thread now, torch's thread count before the first]: the count is
process-wide, so concurrent tasks' blocks share one setting, restored when the last leaves."""


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the block (module docstring), restored after."""
    import torch

    with _THREADS:
        if _inside[0] == 0:
            _inside[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _inside[0] += 1
    try:
        yield
    finally:
        with _THREADS:
            _inside[0] -= 1
            if _inside[0] == 0:
                torch.set_num_threads(_inside[1])


@dataclass
class TorchLearner:
    """homo_nn with the PyTorch module at `path` (a Learner, homo_lr/learner.py)."""

    path: str
    where: str = "at this party"
    name: str = "homo_nn"
    params_type: type[HomoLrParams] = HomoNnParams
    _modules: dict[int, torch.nn.Module] = field(default_factory=dict, repr=False)

    def module(self, features: int) -> torch.nn.Module:
        """The module for `features` columns, built once; its values are whatever weights
        were loaded last (`_loaded`), so only `initial` builds under the params' seed."""
        if features not in self._modules:
            self._modules[features] = build(self.path, features, 0, self.where)
        return self._modules[features]

    def length(self, features: int, params: HomoLrParams) -> int:
        return sum(p.numel() for p in self.module(features).parameters())

    def initial(self, features: int, params: HomoLrParams) -> hmath.Floats:
        module = build(self.path, features, params.seed, self.where)  # a fresh initialisation
        return _vector(module)

    def loss(self, weights: hmath.Floats, x1: hmath.Floats, y: hmath.Floats) -> float:
        import torch

        module = self._loaded(weights, x1)
        with torch.no_grad(), one_thread():
            logits = self._logits(module, torch.from_numpy(x1[:, :-1]))
            value = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.from_numpy(y)
            )
        return float(value)

    def train(
        self,
        weights: hmath.Floats,
        x1: hmath.Floats,
        y: hmath.Floats,
        training: hmath.LocalTraining,
        stream: Sequence[int],
        params: HomoLrParams,
    ) -> hmath.Floats:
        import torch

        module = self._loaded(weights, x1)
        module.train()
        anchor = torch.from_numpy(np.array(weights, dtype=np.float64))
        penalised = [p for p in module.parameters() if p.dim() >= 2]
        optimizer = torch.optim.SGD(module.parameters(), lr=training.learning_rate)
        x, target = torch.from_numpy(x1[:, :-1]), torch.from_numpy(y)
        rows = x.shape[0]
        with one_thread():
            for epoch in range(training.local_epochs):
                order = np.random.default_rng([*stream, epoch]).permutation(rows)
                for start in range(0, rows, training.batch_size):
                    batch = torch.from_numpy(order[start : start + training.batch_size])
                    optimizer.zero_grad()
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        self._logits(module, x[batch]), target[batch]
                    )
                    if training.alpha:
                        loss = loss + training.alpha / 2 * sum(p.pow(2).sum() for p in penalised)
                    if training.proximal_mu:
                        now = torch.nn.utils.parameters_to_vector(module.parameters())
                        loss = loss + training.proximal_mu / 2 * (now - anchor).pow(2).sum()
                    loss.backward()
                    optimizer.step()
        return _vector(module)

    def table(self, names: list[str], weights: hmath.Floats, params: HomoLrParams) -> Table:
        module = self.module(len(names))
        return Table(
            ids=np.array(parameter_names(module), dtype=np.str_),
            features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
            feature_names=["weight"],
            labels=None,
        )

    def scores(self, weights: hmath.Floats, x: hmath.Floats) -> hmath.Floats:
        """sigmoid(module(x)) with the parameters `weights` (missing values counted as 0)."""
        import torch

        x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
        module = self._loaded(weights, hmath.with_intercept(x))
        module.eval()
        with torch.no_grad(), one_thread():
            score = torch.sigmoid(self._logits(module, torch.from_numpy(x)))
        return np.array(score.numpy(), dtype=np.float64)

    def _loaded(self, weights: hmath.Floats, x1: hmath.Floats) -> torch.nn.Module:
        import torch

        module = self.module(x1.shape[1] - 1)
        vector = torch.from_numpy(np.array(weights, dtype=np.float64))
        if vector.numel() != sum(p.numel() for p in module.parameters()):
            raise ModelError(
                f"homo_nn: {vector.numel()} weights for model {self.path!r}, which has "
                f"{sum(p.numel() for p in module.parameters())} parameters"
            )
        torch.nn.utils.vector_to_parameters(vector, module.parameters())
        return module

    def _logits(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1 or out.shape[0] != x.shape[0]:
            raise ModelError(
                f"homo_nn: model {self.path!r} gave output of shape {tuple(out.shape)} for "
                f"{x.shape[0]} rows; it must give one logit per row"
            )
        return out


def _vector(module: torch.nn.Module) -> hmath.Floats:
    import torch

    with torch.no_grad():
        flat = torch.nn.utils.parameters_to_vector(module.parameters())
    return np.array(flat.numpy(), dtype=np.float64)


def parameter_names(module: torch.nn.Module) -> list[str]:
    """The model table's row ids, in the vector's order."""
    return [
        f"{PREFIX}{name}.{i}" for name, p in module.named_parameters() for i in range(p.numel())
    ]
