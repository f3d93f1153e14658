"""The analyses, one folder each (config + typed output + computation), registered here in report order.

Adding an analysis: a folder ``scopebench/analyses/<name>/`` with ``config.py``, ``output.py`` and
``compute.py``, one :class:`Analysis` entry below, and a field of that config type in
:class:`scopebench.suite.scales.BenchScale`. Its quantities, result-file section and leaderboard
columns follow from the output model.
"""
from __future__ import annotations

from scopebench.analyses.attention_emd.config import AttentionEMDConfig
from scopebench.analyses.attention_emd.output import AttentionEMDOutput
from scopebench.analyses.awcds.config import AwCDSConfig
from scopebench.analyses.awcds.output import AwCDSOutput
from scopebench.analyses.base import (
    Analysis, AnalysisConfig, AnalysisOutput, Inputs, QuantityInfo, Unavailable,
)
from scopebench.analyses.cds.config import CDSConfig
from scopebench.analyses.cds.output import CDSOutput
from scopebench.analyses.feature_maps.config import FeatureMapsConfig
from scopebench.analyses.feature_maps.output import FeatureMapsOutput
from scopebench.analyses.reconstruction.config import ReconstructionConfig
from scopebench.analyses.reconstruction.output import FVU_NORMALISATION, ReconstructionOutput
from scopebench.analyses.removal_probes.config import RemovalProbesConfig
from scopebench.analyses.removal_probes.output import RemovalProbesOutput

ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("reconstruction", "Table 6", "sae", "eval", ReconstructionConfig, ReconstructionOutput),
    Analysis("cds", "Table 4, Figure 6", "sae", "scc", CDSConfig, CDSOutput),
    Analysis("attention_emd", "Tables 7, 9", "backbone", "attention", AttentionEMDConfig, AttentionEMDOutput),
    Analysis("awcds", "Figure 7", "sae", "scc", AwCDSConfig, AwCDSOutput),
    Analysis("feature_maps", "Figures 9, 10", "sae", "scc", FeatureMapsConfig, FeatureMapsOutput),
    Analysis("removal_probes", "Tables 3, 8, Figure 8", "sae", None, RemovalProbesConfig, RemovalProbesOutput),
)}


def get_analysis(name: str) -> Analysis:
    try:
        return ANALYSES[name]
    except KeyError:
        raise KeyError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}") from None


def quantity_catalogue() -> dict[str, QuantityInfo]:
    """Every quantity base name -> where it is measured, what it means, its unit (generated from the outputs)."""
    found: dict[str, QuantityInfo] = {}
    for analysis in ANALYSES.values():
        for info in analysis.output.catalogue(analysis.name):
            found.setdefault(info.name, info)
    return found


__all__ = ["ANALYSES", "FVU_NORMALISATION", "Analysis", "AnalysisConfig", "AnalysisOutput", "Inputs",
           "QuantityInfo", "Unavailable", "get_analysis", "quantity_catalogue"]
