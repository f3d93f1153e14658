"""Shared fixtures of the unit tests."""
import socket
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread avoids OpenMP spin-waits on a small, shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty HF cache (returned), no weights config, and sockets that fail loudly if anything goes online."""
    from scopebench.backbones.weights import CONFIG_ENV

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    def no_network(*_args, **_kwargs):
        raise AssertionError("the code under test tried to open a network socket")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return hub


@pytest.fixture
def known_planted_miss(monkeypatch):
    """Registers a known planted miss for the test (the registry of the planted default has none since v9):
    ``known_planted_miss(claim_id, reason, architectures=None)`` returns the claim as registered."""
    from scopebench.claims import registry
    from scopebench.cli import claims as cli_claims

    def register(claim_id: str, reason: str, architectures: tuple[str, ...] | None = None):
        claim = registry.CLAIMS_BY_ID[claim_id]
        missed = claim.model_copy(update={"planted_miss": registry.KnownMiss(reason=reason,
                                                                             architectures=architectures)})
        registered = tuple(missed if c is claim else c for c in registry.CLAIMS)
        monkeypatch.setattr(registry, "CLAIMS", registered)
        monkeypatch.setattr(cli_claims, "CLAIMS", registered)
        monkeypatch.setitem(registry.CLAIMS_BY_ID, claim_id, missed)
        return missed

    return register
