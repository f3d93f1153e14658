"""The paper's claims as data, bound to the analysis outputs they check, and one evaluator for all.

Each :class:`Claim` names the analysis whose output it checks and a relation between two of
that output's quantities (``a`` and ``b``). :func:`check_all` evaluates every claim that
applies to one output (its analysis, its backbone, the quantities it holds), so bench
modules never restate a relation. The paper's numbers are in :mod:`scopebench.paper`; every
claim carries the subset it compares, so a report can print "measured vs paper".

Quantities indexed by the SCC shift ``s`` are written ``name[s=N]`` (:func:`scopebench.keys.indexed`);
a relation with ``for_every="s"`` must hold at every ``s`` measured.

Tolerances are absolute, in the unit of the compared quantity, and always give slack
in the direction of passing: ``a <= b`` passes when ``a <= b + tolerance``, ``a > b``
when ``a > b - tolerance`` (so a zero tolerance keeps a strict relation strict).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from scopebench.analyses import ANALYSES, AnalysisOutput, quantity_catalogue
from scopebench.keys import base_name, index_of, indexed
from scopebench.paper import PAPER_TABLES

PLANTED = "planted"

#: Canonical measured quantities: name -> meaning (generated from the analysis output models).
QUANTITIES: dict[str, str] = {name: f"{info.description} [{info.unit}]" for name, info in quantity_catalogue().items()}

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
    # verify mode (the SAE under test, or a backbone-level claim): a failure fails the run;
    # leaderboard mode (every other SAE): the verdict is recorded and shown, never asserted
    asserted: bool = True

    @property
    def fails_run(self) -> bool:
        return self.asserted and not self.passed


class Claim(BaseModel):
    """One checkable statement of the paper."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str  # where the paper makes it: "Table 6", "Figure 7", ...
    table: str  # the paper table or figure whose numbers it compares (key of scopebench.paper.PAPER_TABLES)
    analysis: str  # the analysis whose output it checks (scopebench.analyses.ANALYSES)
    statement: str
    backbones: tuple[str, ...]
    relation: Relation
    tolerance: float = 0.0
    paper_values: dict[str, dict[str, float]] = {}  # backbone -> quantity key -> value

    @model_validator(mode="after")
    def _known_quantities(self) -> Claim:
        if self.analysis not in ANALYSES:
            raise ValueError(f"claim {self.id}: unknown analysis {self.analysis!r}; known: {', '.join(ANALYSES)}")
        catalogue = quantity_catalogue()
        for name in (self.relation.a, self.relation.b):
            info = catalogue.get(base_name(name))
            if info is None or info.analysis != self.analysis:
                raise ValueError(f"claim {self.id}: {name!r} is not a quantity of the {self.analysis} output")
        if self.tolerance < 0:
            raise ValueError(f"claim {self.id}: tolerance must be >= 0, got {self.tolerance}")
        return self

    @property
    def quantities(self) -> tuple[str, str]:
        return (self.relation.a, self.relation.b)

    def applies_to(self, backbone: str) -> bool:
        return backbone in self.backbones


def _paper_subset(table: str, relation: Relation) -> dict[str, dict[str, float]]:
    """The paper's values of the relation's quantities (all shifts for a ``for_every`` relation)."""
    def compared(key: str) -> bool:
        if relation.for_every is not None:
            return base_name(key) in (relation.a, relation.b)
        return key in (relation.a, relation.b)
    return {backbone: {k: v for k, v in values.items() if compared(k)}
            for backbone, values in PAPER_TABLES.get(table, {}).items()}


def _claim(id: str, source: str, analysis: str, statement: str, backbones: tuple[str, ...], relation: Relation,
           tolerance: float = 0.0) -> Claim:
    """A claim on ``backbones`` and on the planted instrument, which is built to show every phenomenon."""
    table = id.split(".", 1)[0]
    return Claim(id=id, source=source, table=table, analysis=analysis, statement=statement,
                 backbones=backbones + (PLANTED,), relation=relation, tolerance=tolerance,
                 paper_values=_paper_subset(table, relation))


_ALL_REAL = tuple(PAPER_TABLES["table6"])
_CLIP = ("clip-b16", "clip-l14", "clip-l14-336")
_BASE_OTHERS = ("dinov2-b", "deit3-b", "siglip2-b")
_OTHERS = tuple(n for n in _ALL_REAL if n not in _CLIP)

CLAIMS: tuple[Claim, ...] = (
    _claim("table6.outliers-reconstructed-better", "Table 6", "reconstruction",
           "The SAE reconstructs outlier tokens with no more unexplained variance than tokens overall.",
           _ALL_REAL, Relation(a="fvu_o", op="<=", b="fvu_a")),
    _claim("table6.outliers-cosine-higher", "Table 6", "reconstruction",
           "Reconstructions of outlier tokens point in the token's direction at least as well as for all tokens.",
           _ALL_REAL, Relation(a="cs_o", op=">=", b="cs_a")),
    _claim("table4.high-cds-minority", "Table 4", "cds",
           "Features with high contextual dependency are fewer than features with low dependency.",
           _CLIP, Relation(a="n_high", op="<", b="n_low")),
    _claim("table7.outlier-attention-unstable", "Table 7", "attention_emd",
           "Under a one-patch context shift, outlier queries move their attention much more than other queries.",
           _BASE_OTHERS, Relation(a=indexed("attn_emd_out", 1), op=">", b=indexed("attn_emd_non", 1))),
    _claim("table9.outlier-attention-unstable-every-shift", "Table 9", "attention_emd",
           "Outlier queries move their attention more than other queries at every SCC shift.",
           ("clip-l14-336",), Relation(a="attn_emd_out", op=">", b="attn_emd_non", for_every="s")),
    _claim("figure7.awcds-peaks-at-high-norm", "Figure 7", "awcds",
           "Tokens in the top norm bin are built from more context-dependent features than median-norm tokens.",
           _BASE_OTHERS, Relation(a="awcds_top_bin", op=">", b="awcds_median_bin")),
    _claim("figure9-10.low-cds-maps-follow-content", "Figures 9, 10", "feature_maps",
           "Low-CDS features fire on the same content in both SCC views; high-CDS features' maps move with the crop.",
           _CLIP, Relation(a="view_tv_low", op="<", b="view_tv_high")),
    _claim("table3.seg-low-removal-hurts-more", "Table 3", "removal_probes",
           "Removing low-CDS features lowers segmentation mIoU more than removing high-CDS features.",
           _CLIP[:2], Relation(a="seg_miou_low_removed", op="<", b="seg_miou_high_removed")),
    _claim("table3.depth-low-removal-hurts-more", "Table 3", "removal_probes",
           "Removing low-CDS features raises depth RMSE more than removing high-CDS features.",
           _CLIP[:2], Relation(a="depth_rmse_low_removed", op=">", b="depth_rmse_high_removed")),
    _claim("table3.cls-high-removal-harmless", "Table 3", "removal_probes",
           "Removing high-CDS features keeps classification accuracy within a point of the original or above it.",
           _CLIP[:2], Relation(a="cls_top1_high_removed", op=">=", b="cls_top1_original"), tolerance=1.0),
    _claim("table8.seg-low-removal-hurts-more", "Table 8", "removal_probes",
           "Beyond CLIP, removing low-CDS features lowers segmentation mIoU more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="seg_miou_low_removed", op="<", b="seg_miou_high_removed")),
    _claim("table8.depth-low-removal-hurts-more", "Table 8", "removal_probes",
           "Beyond CLIP, removing low-CDS features raises depth RMSE more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="depth_rmse_low_removed", op=">", b="depth_rmse_high_removed")),
    _claim("figure8.cls-high-removal-harmless", "Figure 8", "removal_probes",
           "Beyond CLIP, at every scale, removing high-CDS features keeps accuracy within a point or improves it.",
           _OTHERS, Relation(a="cls_top1_high_removed", op=">=", b="cls_top1_original"), tolerance=1.0),
    _claim("figure8.cls-low-removal-hurts", "Figure 8", "removal_probes",
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
        found[2] for key in measured
        if (found := index_of(key)) and found[0] == relation.a and found[1] == relation.for_every
    )
    if not index_values:
        raise ValueError(f"measured values lack any {relation.a}[{relation.for_every}=N]; "
                         f"pass keys built with scopebench.keys.indexed({relation.a!r}, s)")
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


def _measurable(relation: Relation, measured: Mapping[str, float]) -> bool:
    if relation.for_every is None:
        return relation.a in measured and relation.b in measured
    return any((found := index_of(key)) and found[0] == relation.a for key in measured)


def claims_for(analysis: str, backbone: str, measured: Mapping[str, float]) -> list[Claim]:
    """The claims that check ``analysis``'s output on ``backbone`` and whose quantities ``measured`` holds."""
    return [c for c in CLAIMS if c.analysis == analysis and c.applies_to(backbone) and _measurable(c.relation, measured)]


def check_all(analysis: str, output: AnalysisOutput, backbone: str, *, asserted: bool = True
              ) -> list[tuple[Claim, Verdict]]:
    """Every claim that applies to one analysis output, evaluated; ``asserted`` False scores them (leaderboard mode)."""
    measured = output.quantities()
    return [(claim, evaluate(claim, measured).model_copy(update={"asserted": asserted}))
            for claim in claims_for(analysis, backbone, measured)]


def backbones_of(table: str) -> tuple[str, ...]:
    """Every backbone a claim of paper table/figure ``table`` covers (for a bench module's parametrisation)."""
    names = {b for c in CLAIMS if c.table == table for b in c.backbones}
    if not names:
        known = sorted({c.table for c in CLAIMS})
        raise KeyError(f"no claim comes from {table!r}; claims come from {', '.join(known)}")
    return tuple(sorted(names))
