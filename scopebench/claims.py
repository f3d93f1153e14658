"""The paper's claims as data, and one generic evaluator for all of them.

Each :class:`Claim` names the quantities a bench test measures and the relation
between two of them (``a`` and ``b``). The paper's own numbers live in
:data:`PAPER_TABLES` (table -> backbone -> quantity -> value) and every claim carries
the subset it compares, so a report can print "measured vs paper" side by side.

Quantities indexed by the SCC shift ``s`` are written ``name[s=N]`` (see
:func:`indexed`); a relation with ``for_every="s"`` must hold at every ``s`` measured.

Tolerances are absolute, in the unit of the compared quantity, and always give slack
in the direction of passing: ``a <= b`` passes when ``a <= b + tolerance``, ``a > b``
when ``a > b - tolerance`` (so a zero tolerance keeps a strict relation strict).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

PLANTED = "planted"

#: Canonical measured quantities: name -> meaning and unit. Bench tests and result
#: files use exactly these names (indexed ones as ``name[s=N]``).
QUANTITIES: dict[str, str] = {
    "fvu_a": "FVU over all patch tokens (dataset-level normalisation, see DESIGN)",
    "fvu_o": "FVU over outlier tokens",
    "l0_a": "mean number of non-zero latents per token, all tokens",
    "l0_o": "mean number of non-zero latents per token, outlier tokens",
    "cs_a": "mean cosine similarity of token and reconstruction, all tokens",
    "cs_o": "mean cosine similarity of token and reconstruction, outlier tokens",
    "dead_pct": "percent of SAE latents that never fire on the evaluation tokens",
    "dict_size": "number of SAE latents",
    "gamma": "CDS threshold separating low- from high-CDS features",
    "n_low": "number of features with CDS <= gamma",
    "n_high": "number of features with CDS > gamma",
    "attn_emd_non": "mean attention EMD of non-outlier queries under SCC, patch units",
    "attn_emd_out": "mean attention EMD of outlier queries under SCC, patch units",
    "awcds_top_bin": "mean awCDS of the highest token-norm percentile bin",
    "awcds_median_bin": "mean awCDS of the token-norm percentile bin holding the median",
    "cls_top1_original": "linear-probe top-1 accuracy (percent), original tokens",
    "cls_top1_high_removed": "linear-probe top-1 accuracy (percent), high-CDS features removed",
    "cls_top1_low_removed": "linear-probe top-1 accuracy (percent), low-CDS features removed",
    "seg_miou_original": "linear-probe segmentation mIoU (percent), original tokens",
    "seg_miou_high_removed": "linear-probe segmentation mIoU (percent), high-CDS features removed",
    "seg_miou_low_removed": "linear-probe segmentation mIoU (percent), low-CDS features removed",
    "depth_rmse_original": "linear-probe depth RMSE, original tokens",
    "depth_rmse_high_removed": "linear-probe depth RMSE, high-CDS features removed",
    "depth_rmse_low_removed": "linear-probe depth RMSE, low-CDS features removed",
}

_INDEXED = re.compile(r"^(?P<base>[a-z0-9_]+)\[(?P<index>[a-z]+)=(?P<value>-?\d+)\]$")


def indexed(name: str, s: int) -> str:
    """Key of an SCC-shift-indexed quantity, e.g. ``indexed("attn_emd_out", 1) == "attn_emd_out[s=1]"``."""
    return f"{name}[s={s}]"


def _base_name(key: str) -> str:
    match = _INDEXED.match(key)
    return match["base"] if match else key


_T6 = ("fvu_a", "fvu_o", "l0_a", "l0_o", "cs_a", "cs_o")
_T6_ROWS = {
    "clip-b16": (0.099, 0.021, 30.201, 13.064, 0.923, 0.998),
    "clip-l14": (0.176, 0.042, 29.307, 14.170, 0.873, 0.999),
    "clip-l14-336": (0.115, 0.028, 29.654, 16.391, 0.913, 0.999),
    "dinov2-b": (0.039, 0.001, 29.425, 7.298, 0.911, 0.999),
    "dinov2-l": (0.115, 0.001, 30.416, 15.334, 0.917, 0.999),
    "dinov2-g": (0.062, 0.002, 30.664, 28.709, 0.912, 0.999),
    "deit3-s": (0.123, 0.081, 32.067, 20.318, 0.941, 0.956),
    "deit3-b": (0.215, 0.101, 32.293, 10.208, 0.900, 0.940),
    "deit3-l": (0.170, 0.096, 31.533, 16.113, 0.930, 0.953),
    "siglip2-b": (0.030, 0.001, 29.982, 13.183, 0.948, 0.999),
    "siglip2-l": (0.042, 0.001, 29.628, 13.573, 0.925, 0.999),
    "siglip2-g": (0.116, 0.001, 30.144, 10.202, 0.918, 0.999),
}
_T9_NON = (1.490, 1.745, 1.842, 1.855, 1.915, 1.958)
_T9_OUT = (5.179, 6.752, 6.869, 6.876, 5.811, 5.533)


def _probe_row(kind: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((f"{kind}_original", f"{kind}_high_removed", f"{kind}_low_removed"), values))


#: Every number the paper reports that the suite compares against:
#: table -> backbone -> quantity -> value. Table 5 (layers, tau) lives in the registry.
PAPER_TABLES: dict[str, dict[str, dict[str, float]]] = {
    "table3": {  # main paper; ImageNet top-1 / ADE20K mIoU / NYUd RMSE
        "clip-b16": {**_probe_row("cls_top1", (74.82, 75.54, 64.86)), **_probe_row("seg_miou", (25.87, 26.02, 11.65)),
                     **_probe_row("depth_rmse", (0.8841, 0.8616, 0.9481))},
        "clip-l14": {**_probe_row("cls_top1", (80.82, 81.28, 78.30)), **_probe_row("seg_miou", (26.66, 26.44, 13.89)),
                     **_probe_row("depth_rmse", (0.8029, 0.7994, 0.8878))},
    },
    "table4": {
        "clip-b16": {"dict_size": 24576, "gamma": 0.14, "n_low": 17329, "n_high": 7247},
        "clip-l14": {"dict_size": 32768, "gamma": 0.20, "n_low": 27887, "n_high": 4881},
        "clip-l14-336": {"dict_size": 32768, "gamma": 0.13, "n_low": 22323, "n_high": 10445},
    },
    "table6": {name: dict(zip(_T6, row)) for name, row in _T6_ROWS.items()},
    "table7": {
        "dinov2-b": {indexed("attn_emd_non", 1): 0.61, indexed("attn_emd_out", 1): 6.96},
        "deit3-b": {indexed("attn_emd_non", 1): 0.38, indexed("attn_emd_out", 1): 5.97},
        "siglip2-b": {indexed("attn_emd_non", 1): 3.75, indexed("attn_emd_out", 1): 7.18},
    },
    "table8": {
        "dinov2-b": {**_probe_row("seg_miou", (25.26, 26.11, 15.47)), **_probe_row("depth_rmse", (0.7500, 0.7539, 0.8402))},
        "deit3-b": {**_probe_row("seg_miou", (26.48, 26.26, 8.38)), **_probe_row("depth_rmse", (0.8444, 0.8391, 1.0607))},
        "siglip2-b": {**_probe_row("seg_miou", (35.62, 35.39, 16.93)),
                      **_probe_row("depth_rmse", (0.8178, 0.8123, 0.9205))},
    },
    "table9": {
        "clip-l14-336": {
            **{indexed("attn_emd_non", s): v for s, v in enumerate(_T9_NON, start=1)},
            **{indexed("attn_emd_out", s): v for s, v in enumerate(_T9_OUT, start=1)},
        },
    },
}

RelationOp = Literal["<=", ">=", "<", ">"]


class Relation(BaseModel):
    """``a op b`` (with the claim's tolerance), optionally at every value of an index."""

    model_config = ConfigDict(frozen=True)

    a: str
    op: RelationOp
    b: str
    for_every: Literal["s"] | None = None

    def text(self) -> str:
        suffix = f" for every {self.for_every}" if self.for_every else ""
        return f"{self.a} {self.op} {self.b}{suffix}"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    detail: str
    exemption: str | None = None  # why the SAE it was checked on need not satisfy the claim

    @property
    def expected_failure(self) -> bool:
        """Failed, on an SAE the claim exempts: reported (XFAIL), not a failing run."""
        return not self.passed and self.exemption is not None


class Claim(BaseModel):
    """One checkable statement of the paper."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str  # where the paper makes it: "Table 6", "Figure 7", ...
    table: str  # measurement group the quantities are recorded under in result files
    statement: str
    backbones: tuple[str, ...]
    relation: Relation
    tolerance: float = 0.0
    paper_values: dict[str, dict[str, float]] = {}  # backbone -> quantity key -> value
    # SAE variant -> why the paper's claim is not expected of it (a mechanism, not a measured
    # outcome).  Its verdict is still computed, shown and stored; a failure is an expected
    # failure (pytest xfail, "XFAIL" in the claims table) that does not fail the run, a pass a PASS.
    exempt_saes: dict[str, str] = {}

    @model_validator(mode="after")
    def _known_quantities(self) -> Claim:
        for name in (self.relation.a, self.relation.b):
            if name not in QUANTITIES:
                raise ValueError(f"claim {self.id}: unknown quantity {name!r}; add it to QUANTITIES")
        if self.tolerance < 0:
            raise ValueError(f"claim {self.id}: tolerance must be >= 0, got {self.tolerance}")
        return self

    @property
    def quantities(self) -> tuple[str, str]:
        return (self.relation.a, self.relation.b)

    def applies_to(self, backbone: str) -> bool:
        return backbone in self.backbones


def _paper_subset(table: str, quantities: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {
        backbone: {k: v for k, v in values.items() if _base_name(k) in quantities}
        for backbone, values in PAPER_TABLES.get(table, {}).items()
    }


def _claim(id: str, source: str, table: str, statement: str, backbones: tuple[str, ...], relation: Relation,
           tolerance: float = 0.0, exempt_saes: dict[str, str] | None = None) -> Claim:
    """A claim on ``backbones`` and on the planted instrument, which is built to show every phenomenon."""
    paper = _paper_subset(table, (relation.a, relation.b))
    return Claim(id=id, source=source, table=table, statement=statement, backbones=backbones + (PLANTED,),
                 relation=relation, tolerance=tolerance, paper_values=paper, exempt_saes=exempt_saes or {})


_ALL_REAL = tuple(PAPER_TABLES["table6"])
_CLIP = ("clip-b16", "clip-l14", "clip-l14-336")
_BASE_OTHERS = ("dinov2-b", "deit3-b", "siglip2-b")
_OTHERS = tuple(n for n in _ALL_REAL if n not in _CLIP)

CLAIMS: tuple[Claim, ...] = (
    _claim("table6.outliers-reconstructed-better", "Table 6", "table6",
           "The SAE reconstructs outlier tokens with no more unexplained variance than tokens overall.",
           _ALL_REAL, Relation(a="fvu_o", op="<=", b="fvu_a"),
           exempt_saes={"topk": "TopK gives every token exactly k latents, so the few high-norm outlier tokens "
                                "get no more capacity than any other token; the paper's BatchTopK selects the "
                                "top k x batch activations across the batch and lets outliers take more"}),
    _claim("table6.outliers-cosine-higher", "Table 6", "table6",
           "Reconstructions of outlier tokens point in the token's direction at least as well as for all tokens.",
           _ALL_REAL, Relation(a="cs_o", op=">=", b="cs_a")),
    _claim("table4.high-cds-minority", "Table 4", "table4",
           "Features with high contextual dependency are fewer than features with low dependency.",
           _CLIP, Relation(a="n_high", op="<", b="n_low")),
    _claim("table7.outlier-attention-unstable", "Table 7", "table7",
           "Under a one-patch context shift, outlier queries move their attention much more than other queries.",
           _BASE_OTHERS, Relation(a="attn_emd_out", op=">", b="attn_emd_non", for_every="s")),
    _claim("table9.outlier-attention-unstable-every-shift", "Table 9", "table9",
           "Outlier queries move their attention more than other queries at every SCC shift.",
           ("clip-l14-336",), Relation(a="attn_emd_out", op=">", b="attn_emd_non", for_every="s")),
    _claim("figure7.awcds-peaks-at-high-norm", "Figure 7", "figure7",
           "Tokens in the top norm bin are built from more context-dependent features than median-norm tokens.",
           _BASE_OTHERS, Relation(a="awcds_top_bin", op=">", b="awcds_median_bin")),
    _claim("table3.seg-low-removal-hurts-more", "Table 3", "table3",
           "Removing low-CDS features lowers segmentation mIoU more than removing high-CDS features.",
           _CLIP[:2], Relation(a="seg_miou_low_removed", op="<", b="seg_miou_high_removed")),
    _claim("table3.depth-low-removal-hurts-more", "Table 3", "table3",
           "Removing low-CDS features raises depth RMSE more than removing high-CDS features.",
           _CLIP[:2], Relation(a="depth_rmse_low_removed", op=">", b="depth_rmse_high_removed")),
    _claim("table3.cls-high-removal-harmless", "Table 3", "table3",
           "Removing high-CDS features keeps classification accuracy within a point of the original or above it.",
           _CLIP[:2], Relation(a="cls_top1_high_removed", op=">=", b="cls_top1_original"), tolerance=1.0),
    _claim("table8.seg-low-removal-hurts-more", "Table 8", "table8",
           "Beyond CLIP, removing low-CDS features lowers segmentation mIoU more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="seg_miou_low_removed", op="<", b="seg_miou_high_removed")),
    _claim("table8.depth-low-removal-hurts-more", "Table 8", "table8",
           "Beyond CLIP, removing low-CDS features raises depth RMSE more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="depth_rmse_low_removed", op=">", b="depth_rmse_high_removed")),
    _claim("figure8.cls-high-removal-harmless", "Figure 8", "figure8",
           "Beyond CLIP, at every scale, removing high-CDS features keeps accuracy within a point or improves it.",
           _OTHERS, Relation(a="cls_top1_high_removed", op=">=", b="cls_top1_original"), tolerance=1.0),
    _claim("figure8.cls-low-removal-hurts", "Figure 8", "figure8",
           "Beyond CLIP, at every scale, removing low-CDS features lowers classification accuracy.",
           _OTHERS, Relation(a="cls_top1_low_removed", op="<", b="cls_top1_original")),
)

CLAIMS_BY_ID: dict[str, Claim] = {claim.id: claim for claim in CLAIMS}


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS_BY_ID)}") from None


def _holds(a: float, op: RelationOp, b: float, tolerance: float) -> bool:
    if op == "<=":
        return a <= b + tolerance
    if op == ">=":
        return a >= b - tolerance
    if op == "<":
        return a < b + tolerance
    return a > b - tolerance


def _pairs(relation: Relation, measured: Mapping[str, float]) -> list[tuple[str, str]]:
    """The (a-key, b-key) pairs to compare; raises when the measurement cannot support the claim."""
    if relation.for_every is None:
        missing = [k for k in (relation.a, relation.b) if k not in measured]
        if missing:
            raise ValueError(f"measured values lack {missing}; pass a mapping with keys {relation.a!r} and {relation.b!r}")
        return [(relation.a, relation.b)]
    index_values = sorted(
        int(m["value"]) for key in measured
        if (m := _INDEXED.match(key)) and m["base"] == relation.a and m["index"] == relation.for_every
    )
    if not index_values:
        raise ValueError(f"measured values lack any {relation.a}[{relation.for_every}=N]; "
                         f"pass keys built with scopebench.claims.indexed({relation.a!r}, s)")
    pairs = [(indexed(relation.a, v), indexed(relation.b, v)) for v in index_values]
    missing = [b for _, b in pairs if b not in measured]
    if missing:
        raise ValueError(f"measured values lack {missing} to compare with the {relation.a} values given")
    return pairs


def evaluate(claim: Claim, measured: Mapping[str, float]) -> Verdict:
    """Check ``claim`` on ``measured`` (quantity key -> value). NaN counts as a failure, not an error."""
    tol = claim.tolerance
    failures: list[str] = []
    parts: list[str] = []
    for a_key, b_key in _pairs(claim.relation, measured):
        a, b = float(measured[a_key]), float(measured[b_key])
        ok = not (math.isnan(a) or math.isnan(b)) and _holds(a, claim.relation.op, b, tol)
        part = f"{a_key}={a:.4g} {claim.relation.op} {b_key}={b:.4g}"
        parts.append(part)
        if not ok:
            failures.append(part)
    tol_text = f" (tolerance {tol:g})" if tol else ""
    if failures:
        return Verdict(passed=False, detail=f"{claim.relation.text()}{tol_text} fails: " + "; ".join(failures))
    return Verdict(passed=True, detail=f"{claim.relation.text()}{tol_text} holds: " + "; ".join(parts))
