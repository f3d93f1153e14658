"""scopebench: the claims of "Beyond Semantics" (CVPR 2026) as a pytest suite, and its parts for independent use.

The main entry points are importable from here; each is loaded on first use (PEP 562), so
``import scopebench`` stays light and the command line starts without torch::

    from scopebench import Workbench, ActivationStore, PLANTED_SCALE
    bench = Workbench(ActivationStore("/tmp/cache"), device="cpu")
    bench.run("reconstruction", "planted", "batchtopk").fvu_a

Every analysis also runs on plain arrays or an SAE object without the bench:
``metrics_of_arrays`` (Table 6), ``compute_cds`` (Table 4), ``AttentionEMDAccumulator``
(Tables 7, 9), ``token_awcds`` (Figure 7), ``remove_group`` (feature-group removal).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ANALYSES": "scopebench.analyses",
    "ActivationStore": "scopebench.pipeline.cache",
    "AttentionEMDAccumulator": "scopebench.analyses.attention_emd.accumulator",
    "BenchScale": "scopebench.suite.scales",
    "CLAIMS": "scopebench.claims.registry",
    "PAPER_SCALE": "scopebench.suite.scales",
    "PLANTED_SCALE": "scopebench.suite.scales",
    "REGISTRY": "scopebench.backbones.registry",
    "Workbench": "scopebench.suite.workbench",
    "check_all": "scopebench.claims.registry",
    "compute_cds": "scopebench.analyses.cds.scores",
    "load_backbone": "scopebench.backbones",
    "load_result": "scopebench.results.records",
    "load_sae": "scopebench.sae",
    "metrics_of_arrays": "scopebench.analyses.reconstruction.metrics",
    "reconstruction_metrics": "scopebench.analyses.reconstruction.metrics",
    "remove_group": "scopebench.analyses.removal_probes.removal",
    "scc": "scopebench.pipeline.scc",
    "token_awcds": "scopebench.analyses.awcds.tokens",
    "train_sae": "scopebench.sae",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scopebench' has no attribute {name!r}; the public API is {', '.join(__all__)}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
