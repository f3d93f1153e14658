"""Runs split over the ranks of a ``torchrun`` launch: the one home of torch.distributed in scopebench.

Without a process group everything here is the one-process case (rank 0 of 1), so library code
calls these helpers unconditionally.  :func:`init_from_env` starts the group only when the process
was launched by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment): backend ``nccl`` when
CUDA is available (each rank on GPU ``LOCAL_RANK``), else ``gloo``.

Work is split by :func:`share`: rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, ...`` of a list
every rank builds the same way (shard indices, batches of images), so the split is disjoint and
deterministic.  Sums and counts are reduced in float64 / int64 (:func:`sum_over_ranks`).

Every collective waits at most ``$SCOPEBENCH_DIST_TIMEOUT`` seconds (default 7200: SAE training on
rank 0 keeps the others waiting that long at most).  Failures never leave ranks waiting on each
other: :func:`from_main` hands rank 0's result or its error to every rank, and :func:`together` makes
every rank raise when one of them failed, so a failed bench case fails on every rank and the next
one starts in step.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

TIMEOUT_ENV = "SCOPEBENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 7200.0
T = TypeVar("T")


class RankFailed(RuntimeError):
    """Another rank of the launch failed (or timed out) at the same step; its own log has the cause."""


def timeout_s() -> float:
    """Seconds a collective may wait for the other ranks (``$SCOPEBENCH_DIST_TIMEOUT``)."""
    value = os.environ.get(TIMEOUT_ENV, "")
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"${TIMEOUT_ENV}={value!r} must be a positive number of seconds")
    return seconds


def launched() -> bool:
    """True when ``torchrun`` (or ``srun torchrun``) started this process: RANK and WORLD_SIZE are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env() -> bool:
    """Join the launch's process group if this process was started by torchrun; True when distributed.

    Does nothing when the group already exists (the caller started it) or outside torchrun.
    """
    if active():
        return True
    if not launched() or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s()))
    return True


def leave() -> None:
    """Leave the process group (at the end of a session), if this process is in one."""
    if active():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the only rank that commits cache entries, writes results and prints the leaderboard."""
    return rank() == 0


def share(items: Sequence[T]) -> list[T]:
    """This rank's items: ``items[rank::world_size]`` (disjoint over ranks, together all of them)."""
    return list(items[rank()::world_size()])


def _device() -> torch.device:
    """Where collective tensors live: NCCL needs the rank's GPU, gloo takes CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _collective(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except RuntimeError as err:  # DistBackendError and gloo's timeouts are RuntimeErrors
        raise RankFailed(f"rank {rank()} of {world_size()}: waiting for the other ranks at {what} failed ({err}). "
                         f"A rank died (see its log) or took longer than ${TIMEOUT_ENV}={timeout_s():.0f} s; "
                         f"raise it for slow stages") from err


def sum_over_ranks(array: np.ndarray, what: str) -> np.ndarray:
    """Elementwise sum of ``array`` over ranks (float arrays in float64, integers in int64)."""
    array = np.asarray(array)
    if not active():
        return array
    dtype = torch.int64 if array.dtype.kind in "biu" else torch.float64
    tensor = torch.as_tensor(np.ascontiguousarray(array)).to(_device(), dtype)
    _collective(what, lambda: dist.all_reduce(tensor))
    return tensor.cpu().numpy().astype(np.int64 if dtype == torch.int64 else np.float64)


def gather(array: np.ndarray, what: str) -> list[np.ndarray]:
    """Every rank's ``array`` (same shape and dtype on every rank), in rank order."""
    array = np.ascontiguousarray(array)
    if not active():
        return [array]
    tensor = torch.from_numpy(array).to(_device())
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    _collective(what, lambda: dist.all_gather(parts, tensor))
    return [part.cpu().numpy() for part in parts]


def _broadcast_json(value: Any, what: str) -> Any:
    """Rank 0's JSON-able ``value`` on every rank (sent as UTF-8 bytes: nothing is unpickled)."""
    payload = json.dumps(value).encode("utf-8") if is_main() else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=_device())
    _collective(what, lambda: dist.broadcast(size, 0))
    data = (torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(_device()) if is_main()
            else torch.empty(int(size.item()), dtype=torch.uint8, device=_device()))
    if int(size.item()):
        _collective(what, lambda: dist.broadcast(data, 0))
    return json.loads(bytes(data.cpu().numpy()).decode("utf-8"))


def from_main(build: Callable[[], Any], what: str) -> Any:
    """``build()`` run on rank 0 only; its JSON-able result on every rank.

    If it raises, rank 0 re-raises its error and every other rank raises :class:`RankFailed`
    with its message, so no rank is left waiting.  Also a barrier.
    """
    if not active():
        return build()
    outcome: dict[str, Any] = {}
    error: Exception | None = None
    if is_main():
        try:
            outcome = {"value": build()}
        except Exception as err:  # noqa: BLE001 - handed to the other ranks, then re-raised
            error, outcome = err, {"error": f"{type(err).__name__}: {err}"}
    received = _broadcast_json(outcome, what)
    if error is not None:
        raise error
    if "error" in received:
        raise RankFailed(f"rank 0 failed at {what}: {received['error']}")
    return received["value"]


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every rank; afterwards, if it raised on any rank, it raises on all of them.

    The failing rank re-raises its own error; the others raise :class:`RankFailed` naming it.
    Also a barrier: no rank leaves before every rank finished the block.
    """
    if not active():
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks know
        error = err
    flags = np.zeros(world_size(), dtype=np.int64)
    flags[rank()] = error is not None
    failed = np.flatnonzero(sum_over_ranks(flags, what))
    if error is not None:
        raise error
    if failed.size:
        raise RankFailed(f"rank(s) {failed.tolist()} of {world_size()} failed at {what}; see their log")


def barrier(what: str) -> None:
    if active():
        sum_over_ranks(np.zeros(1, dtype=np.int64), what)
