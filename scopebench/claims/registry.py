"""The paper's claims as data, bound to the analysis outputs they check, and one evaluator for all.

Each :class:`Claim` names the analysis whose output it checks and a :class:`Relation` on that
output's quantities. :func:`check_all` evaluates every claim that applies to one output (its
analysis, its backbone, the quantities it holds), so bench modules never restate a relation. A
:class:`FamilyClaim` compares one quantity across the sizes of a model family (Figure 8) with the
same evaluator, on a mapping built by :func:`size_series`. The paper's numbers are in
:mod:`scopebench.paper`; every claim carries the subset it compares, so a report can print
"measured vs paper". Factors and bounds taken from the paper's numbers are computed here from
``PAPER_TABLES`` (``PAPER_BOUNDS``), never typed in.

Quantities indexed by the SCC shift ``s`` are written ``name[s=N]`` (:func:`scopebench.keys.indexed`);
a relation with ``for_every="s"`` must hold at every ``s`` measured.

Tolerances are absolute, in the unit of ``a``, and always give slack in the direction of passing:
``a <= b`` passes when ``a <= b + tolerance``, ``a > b`` when ``a > b - tolerance`` (so a zero
tolerance keeps a strict relation strict). For a monotone relation the tolerance is per step: each
step between consecutive index values may go against the direction by at most that much.

Every verdict carries a *margin*: how far the relation is from failing, in the unit of ``a``, tolerance
included (``b + tolerance - a`` for ``<``/``<=``, ``a - (b - tolerance)`` for ``>``/``>=``, ``b``
meaning ``factor * b``); the worst case over the index for ``for_every`` and monotone relations. A
non-strict relation holds when the margin is >= 0, a strict one when it is > 0; NaN fails.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from scopebench.analyses import ANALYSES, AnalysisOutput, quantity_catalogue
from scopebench.analyses.cds.output import high_cds_share
from scopebench.keys import base_name, index_of, indexed
from scopebench.paper import PAPER_TABLES

PLANTED = "planted"
#: the planted family, smallest first: the embedded default and the two larger sizes that only Figure 8's claims
#: use (scopebench.backbones.registry holds their specs; a test checks that the two agree)
PLANTED_FAMILY = (PLANTED, "planted-b", "planted-l")

#: Canonical measured quantities: name -> meaning (generated from the analysis output models).
QUANTITIES: dict[str, str] = {name: f"{info.description} [{info.unit}]" for name, info in quantity_catalogue().items()}

RelationOp = Literal["<=", ">=", "<", ">"]
Index = Literal["s", "size"]  # the SCC shift; a backbone's rank among its family's sizes (FamilyClaim only)

_MONOTONE_WORDS = {">=": "non-decreasing", "<=": "non-increasing", ">": "increasing", "<": "decreasing"}


class Relation(BaseModel):
    """What a claim states, in one of three forms (each with the claim's tolerance):

    - ``a op factor * b``, ``b`` a quantity: at one key, or with ``for_every`` at every index value measured;
    - ``a op b``, ``b`` a number: a constant bound (``factor`` stays 1);
    - ``along`` an index, ``b`` None: ``a`` monotone over the index values measured, each step
      ``a[next] op a[previous]`` (``>=`` non-decreasing, ``<=`` non-increasing, ``>`` / ``<`` strictly).
    """

    model_config = ConfigDict(frozen=True)

    a: str
    op: RelationOp
    b: str | float | None = None
    factor: float = 1.0
    for_every: Literal["s"] | None = None
    along: Index | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Relation:
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"relation on {self.a}: factor must be a positive number, got {self.factor}")
        if self.along is not None:
            if self.b is not None or self.for_every is not None or self.factor != 1.0:
                raise ValueError(f"relation on {self.a}: a monotone relation (along={self.along!r}) compares a with "
                                 "itself; leave b, factor and for_every unset")
        elif self.b is None:
            raise ValueError(f"relation on {self.a}: give b (a quantity or a number), or along= for a monotone one")
        elif self.is_constant and (self.factor != 1.0 or self.for_every is not None):
            raise ValueError(f"relation on {self.a}: a constant bound b={self.b} takes no factor and no for_every; "
                             "write the bound itself")
        return self

    @property
    def is_constant(self) -> bool:
        return isinstance(self.b, float)

    @property
    def quantities(self) -> tuple[str, ...]:
        """The quantity keys (or base names, for indexed forms) the relation reads."""
        return (self.a, self.b) if isinstance(self.b, str) else (self.a,)

    def text(self) -> str:
        if self.along is not None:
            return f"{self.a} {_MONOTONE_WORDS[self.op]} in {self.along}"
        if self.is_constant:
            return f"{self.a} {self.op} {self.b:g}"
        scaled = f"{self.factor:g} x {self.b}" if self.factor != 1.0 else str(self.b)
        suffix = f" for every {self.for_every}" if self.for_every else ""
        return f"{self.a} {self.op} {scaled}{suffix}"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    detail: str
    # how far from failing, in the unit of a (the module doc); NaN when a compared value is NaN
    margin: float = math.nan
    # verify mode (the SAE under test, or a backbone-level claim): a failure fails the run;
    # leaderboard mode (every other SAE): the verdict is recorded and shown, never asserted
    asserted: bool = True
    # a failure the registry expects there (Claim.known_miss): scored, never asserted
    known_miss: bool = False

    @property
    def fails_run(self) -> bool:
        return self.asserted and not self.passed


class KnownMiss(BaseModel):
    """Why the planted instrument does not show a claim: a mechanism, measured (README, "Fidelity of the planted
    default")."""

    model_config = ConfigDict(frozen=True)

    reason: str
    # the SAE architectures whose mechanism it is; None: the planted data's, so every SAE. Another
    # architecture missing the claim is a plain miss: the leaderboard must not excuse it.
    architectures: tuple[str, ...] | None = None


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
    # why the planted instrument does not show it (a mechanism, measured): there it is scored, never asserted
    planted_miss: KnownMiss | None = None

    def known_miss(self, backbone: str, architecture: str | None) -> str | None:
        """Why the claim is known not to hold on ``backbone`` for an SAE of ``architecture`` (a measured
        mechanism), or None where it is expected to hold."""
        miss = self.planted_miss
        if backbone != PLANTED or miss is None:
            return None
        if miss.architectures is not None and architecture not in miss.architectures:
            return None
        return miss.reason

    @model_validator(mode="after")
    def _known_quantities(self) -> Claim:
        if self.analysis not in ANALYSES:
            raise ValueError(f"claim {self.id}: unknown analysis {self.analysis!r}; known: {', '.join(ANALYSES)}")
        catalogue = quantity_catalogue()
        for name in self.relation.quantities:
            info = catalogue.get(base_name(name))
            if info is None or info.analysis != self.analysis:
                raise ValueError(f"claim {self.id}: {name!r} is not a quantity of the {self.analysis} output")
        if self.tolerance < 0:
            raise ValueError(f"claim {self.id}: tolerance must be >= 0, got {self.tolerance}")
        if (self.relation.along == "size") != isinstance(self, FamilyClaim):
            raise ValueError(f"claim {self.id}: a relation along the family's sizes needs a FamilyClaim, and a "
                             "FamilyClaim's relation runs along='size'")
        return self

    @property
    def quantities(self) -> tuple[str, ...]:
        return self.relation.quantities

    def applies_to(self, backbone: str) -> bool:
        return backbone in self.backbones


class FamilyClaim(Claim):
    """A claim across the sizes of a model family (Figure 8): ``relation`` runs ``along="size"``.

    It is evaluated once per family, by :func:`evaluate`, on :func:`size_series` of one output per size:
    ``a[size=i]``, ``i`` the backbone's rank in ``families[family]`` (smallest first).
    """

    families: dict[str, tuple[str, ...]]

    @model_validator(mode="after")
    def _families_are_its_backbones(self) -> FamilyClaim:
        outside = sorted({b for names in self.families.values() for b in names} - set(self.backbones))
        if not self.families or outside:
            raise ValueError(f"claim {self.id}: give families whose backbones are all among the claim's backbones"
                             + (f"; not among them: {', '.join(outside)}" if outside else ""))
        return self


def _paper_subset(tables: Sequence[str], analysis: str, relation: Relation) -> dict[str, dict[str, float]]:
    """The paper's values of the relation's quantities in ``tables`` (all index values of an indexed relation),
    with the analysis's derived quantities (e.g. high_share) computed from the paper's rows."""
    derived = ANALYSES[analysis].output.DERIVED
    indexed_form = relation.for_every is not None or relation.along is not None
    found: dict[str, dict[str, float]] = {}
    for table in tables:
        for backbone, row in PAPER_TABLES.get(table, {}).items():
            values = {**row, **{k: v for k, f in derived.items() if (v := f(row)) is not None}}
            picked = {k: v for k, v in values.items()
                      if (base_name(k) if indexed_form else k) in relation.quantities}
            found.setdefault(backbone, {}).update(picked)
    return found


def _claim(id: str, source: str, analysis: str, statement: str, backbones: tuple[str, ...], relation: Relation,
           tolerance: float = 0.0, paper_tables: tuple[str, ...] = (), planted_miss: KnownMiss | None = None) -> Claim:
    """A claim on ``backbones`` and on the planted instrument, which is built to show every phenomenon.

    Its paper values come from its own table (the id's prefix) and ``paper_tables``.
    """
    table = id.split(".", 1)[0]
    return Claim(id=id, source=source, table=table, analysis=analysis, statement=statement,
                 backbones=backbones + (PLANTED,), relation=relation, tolerance=tolerance,
                 paper_values=_paper_subset((table, *paper_tables), analysis, relation), planted_miss=planted_miss)


def _family(name: str) -> tuple[str, ...]:
    """The paper's backbones of family ``name`` (``<family>-<size>``), smallest first as Table 6 lists them, or
    the planted family.

    (Read from the paper's rows, not the backbone registry, whose package imports torch; a test checks that
    the registry agrees on families and size order.)
    """
    if name == PLANTED:
        return PLANTED_FAMILY
    return tuple(n for n in PAPER_TABLES["table6"] if n.split("-", 1)[0] == name)


# -- factors and bounds derived from the paper's numbers -----------------------------------------------------------

def _ratios(tables: Sequence[str], a: str, b: str) -> list[float]:
    """``a / b`` on every row (and shift) of ``tables`` that gives both."""
    found = []
    for table in tables:
        for row in PAPER_TABLES[table].values():
            for key, value in row.items():
                at = index_of(key)
                if (at[0] if at else key) != a:
                    continue
                other = indexed(b, at[2], at[1]) if at else b
                if other in row:
                    found.append(value / row[other])
    return found


def _outward(value: float, direction: Literal["down", "up"], decimals: int = 3) -> float:
    """``value`` rounded to ``decimals`` in the passing direction, so the paper's own extreme row still holds
    exactly (a product like ``(x / y) * y`` can miss ``x`` by a rounding), with no more digits than the paper's."""
    scale = 10 ** decimals
    return (math.floor if direction == "down" else math.ceil)(value * scale) / scale


_HIGH_SHARES = [v for row in PAPER_TABLES["table4"].values() if (v := high_cds_share(row)) is not None]

#: Factors and bounds of the claims below, each from the paper's extreme row (rounded outward, ``_outward``).
PAPER_BOUNDS: dict[str, float] = {
    # the smallest outlier / non-outlier attention EMD ratio of Tables 7 and 9 (SigLIP2-B, s=1)
    "emd_out_over_non": _outward(min(_ratios(("table7", "table9"), "attn_emd_out", "attn_emd_non")), "down"),
    # the range of the high-CDS share of the CLIP dictionaries (Table 4)
    "high_share_min": _outward(min(_HIGH_SHARES), "down"),
    "high_share_max": _outward(max(_HIGH_SHARES), "up"),
    # low-CDS removal on dense probes, Tables 3 and 8: the mildest harm of any row
    "seg_low_over_original": _outward(max(_ratios(("table3", "table8"), "seg_miou_low_removed", "seg_miou_original")),
                                      "up"),
    "depth_low_over_original": _outward(min(_ratios(("table3", "table8"), "depth_rmse_low_removed",
                                                    "depth_rmse_original")), "down"),
}

#: Relative change that high-CDS removal may make to a dense probe's score and still count as "close to the
#: original" (Table 8's wording). The paper's largest harm in Tables 3 and 8 is 0.8% (mIoU 26.66 -> 26.44 on
#: CLIP-L/14, 26.48 -> 26.26 on DeiT3-B); 5% leaves room for probe seed noise while staying below the mildest
#: low-CDS harm (+7.2% RMSE on CLIP-B/16), so "close" and "clearly worse" cannot both hold.
HIGH_REMOVAL_CLOSE = 0.05

_ALL_REAL = tuple(PAPER_TABLES["table6"])
_CLIP = ("clip-b16", "clip-l14", "clip-l14-336")
_BASE_OTHERS = ("dinov2-b", "deit3-b", "siglip2-b")
_OTHERS = tuple(n for n in _ALL_REAL if n not in _CLIP)
_DENSE_PROBED = _BASE_OTHERS + _CLIP[:2]  # the rows of Tables 8 and 3

CLAIMS: tuple[Claim, ...] = (
    _claim("table6.outliers-reconstructed-better", "Table 6", "reconstruction",
           "The SAE reconstructs outlier tokens with no more unexplained variance than tokens overall.",
           _ALL_REAL, Relation(a="fvu_o", op="<=", b="fvu_a")),
    _claim("table6.outliers-cosine-higher", "Table 6", "reconstruction",
           "Reconstructions of outlier tokens point in the token's direction at least as well as for all tokens.",
           _ALL_REAL, Relation(a="cs_o", op=">=", b="cs_a")),
    _claim("table6.outliers-fewer-latents", "Table 6", "reconstruction",
           "Outlier tokens are reconstructed from fewer active latents than the average token (every row).",
           _ALL_REAL, Relation(a="l0_o", op="<", b="l0_a")),
    _claim("table4.high-cds-minority", "Table 4", "cds",
           "Features with high contextual dependency are fewer than features with low dependency.",
           _CLIP, Relation(a="n_high", op="<", b="n_low")),
    _claim("table4.high-cds-share-above-paper-min", "Table 4", "cds",
           "The high-CDS share of the dictionary is at least the smallest share among the CLIP rows.",
           _CLIP, Relation(a="high_share", op=">=", b=PAPER_BOUNDS["high_share_min"])),
    _claim("table4.high-cds-share-below-paper-max", "Table 4", "cds",
           "The high-CDS share of the dictionary is at most the largest share among the CLIP rows.",
           _CLIP, Relation(a="high_share", op="<=", b=PAPER_BOUNDS["high_share_max"])),
    _claim("figure6.cds-low-mode-dominant", "Figure 6", "cds",
           "Most features sit in a dominant low-CDS mode: its histogram peak is taller than the high-CDS peak "
           "(DINOv2, SigLIP2, DeiT3; the supplement says CLIP shows the same).",
           _BASE_OTHERS + _CLIP, Relation(a="cds_peak_low", op=">", b="cds_peak_high")),
    _claim("figure6.cds-high-mode-separate", "Figure 6", "cds",
           "The high-CDS mass forms a separate mode: the histogram dips to at most half the lower peak between "
           "the two peaks.",
           _BASE_OTHERS + _CLIP, Relation(a="cds_valley_depth", op=">=", b=0.5)),
    _claim("table7.outlier-attention-unstable", "Table 7", "attention_emd",
           "Under a one-patch context shift, outlier queries move their attention much more than other queries.",
           _BASE_OTHERS, Relation(a=indexed("attn_emd_out", 1), op=">", b=indexed("attn_emd_non", 1))),
    _claim("table7.outlier-emd-far-above", "Tables 7, 9", "attention_emd",
           "At every shift, outlier queries' attention EMD is at least the paper's smallest outlier/other ratio "
           "times that of other queries.",
           _BASE_OTHERS + ("clip-l14-336",),
           Relation(a="attn_emd_out", op=">=", b="attn_emd_non", factor=PAPER_BOUNDS["emd_out_over_non"],
                    for_every="s"), paper_tables=("table9",)),
    _claim("table9.outlier-attention-unstable-every-shift", "Table 9", "attention_emd",
           "Outlier queries move their attention more than other queries at every SCC shift.",
           ("clip-l14-336",), Relation(a="attn_emd_out", op=">", b="attn_emd_non", for_every="s")),
    _claim("table9.non-outlier-emd-rises-with-shift", "Table 9 (E.2)", "attention_emd",
           "Other queries' attention EMD grows with the shift: a larger shift moves positions and context more.",
           ("clip-l14-336",), Relation(a="attn_emd_non", op=">=", along="s")),
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
    _claim("table3.cls-high-removal-improves", "Table 3", "removal_probes",
           "Removing high-CDS features improves classification accuracy: the paired-bootstrap interval of the gain "
           "over test images lies above zero.",
           _CLIP[:2], Relation(a="cls_gain_high_removed_lo", op=">", b=0.0)),
    _claim("table8.seg-low-removal-hurts-more", "Table 8", "removal_probes",
           "Beyond CLIP, removing low-CDS features lowers segmentation mIoU more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="seg_miou_low_removed", op="<", b="seg_miou_high_removed")),
    _claim("table8.depth-low-removal-hurts-more", "Table 8", "removal_probes",
           "Beyond CLIP, removing low-CDS features raises depth RMSE more than removing high-CDS ones.",
           _BASE_OTHERS, Relation(a="depth_rmse_low_removed", op=">", b="depth_rmse_high_removed")),
    _claim("table8.seg-high-removal-close", "Tables 8, 3", "removal_probes",
           "Removing high-CDS features leaves segmentation mIoU close to the original (within 5% of it).",
           _DENSE_PROBED, Relation(a="seg_miou_high_removed", op=">=", b="seg_miou_original",
                                   factor=1.0 - HIGH_REMOVAL_CLOSE), paper_tables=("table3",)),
    _claim("table8.depth-high-removal-close", "Tables 8, 3", "removal_probes",
           "Removing high-CDS features leaves depth RMSE close to the original (within 5% of it).",
           _DENSE_PROBED, Relation(a="depth_rmse_high_removed", op="<=", b="depth_rmse_original",
                                   factor=1.0 + HIGH_REMOVAL_CLOSE), paper_tables=("table3",)),
    _claim("table8.seg-low-removal-clearly-below", "Tables 8, 3", "removal_probes",
           "Removing low-CDS features cuts segmentation mIoU at least as much as in the paper's mildest row.",
           _DENSE_PROBED, Relation(a="seg_miou_low_removed", op="<=", b="seg_miou_original",
                                   factor=PAPER_BOUNDS["seg_low_over_original"]), paper_tables=("table3",)),
    _claim("table8.depth-low-removal-clearly-above", "Tables 8, 3", "removal_probes",
           "Removing low-CDS features raises depth RMSE at least as much as in the paper's mildest row.",
           _DENSE_PROBED, Relation(a="depth_rmse_low_removed", op=">=", b="depth_rmse_original",
                                   factor=PAPER_BOUNDS["depth_low_over_original"]), paper_tables=("table3",)),
    _claim("figure8.cls-high-removal-improves", "Figure 8", "removal_probes",
           "Beyond CLIP, at every scale, removing high-CDS features improves classification accuracy (the "
           "paired-bootstrap interval of the gain lies above zero).",
           _OTHERS, Relation(a="cls_gain_high_removed_lo", op=">", b=0.0)),
    _claim("figure8.cls-low-removal-hurts", "Figure 8", "removal_probes",
           "Beyond CLIP, at every scale, removing low-CDS features lowers classification accuracy.",
           _OTHERS + PLANTED_FAMILY[1:], Relation(a="cls_top1_low_removed", op="<", b="cls_top1_original")),
    FamilyClaim(id="figure8.cls-low-removal-gap-narrows", source="Figure 8", table="figure8",
                analysis="removal_probes",
                statement="The accuracy lost by removing low-CDS features shrinks as the model grows, in each family.",
                families={f: _family(f) for f in ("dinov2", "deit3", "siglip2", PLANTED)},
                backbones=_OTHERS + PLANTED_FAMILY,
                relation=Relation(a="cls_top1_low_removal_gap", op="<=", along="size")),
)

CLAIMS_BY_ID: dict[str, Claim] = {claim.id: claim for claim in CLAIMS}


def is_known_miss(claim_id: str, backbone: str, architecture: str | None) -> bool:
    """Whether a recorded verdict of ``claim_id`` on ``backbone`` for an SAE of ``architecture`` is a known miss
    (:meth:`Claim.known_miss`); False for an id the registry no longer has."""
    claim = CLAIMS_BY_ID.get(claim_id)
    return claim is not None and claim.known_miss(backbone, architecture) is not None


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS_BY_ID)}") from None


def _margin(a: float, op: RelationOp, b: float, tolerance: float) -> float:
    """How far ``a op b`` (with slack ``tolerance``) is from failing, in the unit of ``a``; NaN stays NaN."""
    return (b + tolerance) - a if op in ("<", "<=") else a - (b - tolerance)


def _holds(margin: float, op: RelationOp) -> bool:
    return margin > 0 if op in ("<", ">") else margin >= 0  # False for NaN


def index_values(key_base: str, index: str, measured: Mapping[str, float]) -> list[int]:
    """The values ``v`` of ``index`` at which ``measured`` holds ``key_base[index=v]``, in increasing order."""
    return sorted(found[2] for key in measured if (found := index_of(key)) and found[:2] == (key_base, index))


def _pairs(relation: Relation, measured: Mapping[str, float]) -> list[tuple[str, str | float]]:
    """The (left key, right key or constant) comparisons; raises when the measurement cannot support the claim."""
    if relation.along is not None:
        steps = index_values(relation.a, relation.along, measured)
        if len(steps) < 2:
            raise ValueError(f"a monotone relation needs {relation.a}[{relation.along}=N] at two or more values of "
                             f"{relation.along}, got {len(steps)}; pass keys built with scopebench.keys.indexed")
        return [(indexed(relation.a, v, relation.along), indexed(relation.a, u, relation.along))
                for u, v in zip(steps, steps[1:])]
    if relation.for_every is None:
        keys = relation.quantities
        missing = [k for k in keys if k not in measured]
        if missing:
            raise ValueError(f"measured values lack {missing}; pass a mapping with keys {', '.join(map(repr, keys))}")
        return [(relation.a, relation.b)]
    shifts = index_values(relation.a, relation.for_every, measured)
    if not shifts:
        raise ValueError(f"measured values lack any {relation.a}[{relation.for_every}=N]; "
                         f"pass keys built with scopebench.keys.indexed({relation.a!r}, s)")
    pairs = [(indexed(relation.a, v), indexed(relation.b, v)) for v in shifts]
    missing = [b for _, b in pairs if b not in measured]
    if missing:
        raise ValueError(f"measured values lack {missing} to compare with the {relation.a} values given")
    return pairs


def compared_keys(claim: Claim, measured: Mapping[str, float]) -> list[str]:
    """The keys of ``measured`` that ``claim`` compares, in comparison order."""
    keys: list[str] = []
    for pair in _pairs(claim.relation, measured):
        keys += [k for k in pair if isinstance(k, str) and k not in keys]
    return keys


def margin_tolerance(claim: Claim, measured: Mapping[str, float], tolerance_of: Callable[[str], float]) -> float:
    """How far ``claim``'s margin can move while each quantity it compares stays within ``tolerance_of(key)``.

    A comparison ``a op f x b`` moves by at most ``tol(a) + f tol(b)`` (a constant ``b``: ``tol(a)``); the
    verdict's margin is its worst comparison's, so this is the largest over the comparisons.
    """
    factor = claim.relation.factor  # 1 for a monotone relation (Relation checks it)
    return max((tolerance_of(left) + (factor * tolerance_of(right) if isinstance(right, str) else 0.0)
                for left, right in _pairs(claim.relation, measured)), default=0.0)


def evaluate(claim: Claim, measured: Mapping[str, float]) -> Verdict:
    """Check ``claim`` on ``measured`` (quantity key -> value). NaN counts as a failure, not an error."""
    relation, tol = claim.relation, claim.tolerance
    failures: list[str] = []
    parts: list[str] = []
    margins: list[float] = []
    for left, right in _pairs(relation, measured):
        a = float(measured[left])
        if isinstance(right, str):
            b = float(measured[right])
            right_text = (f"{relation.factor:g} x " if relation.factor != 1.0 else "") + f"{right}={b:.4g}"
        else:
            b, right_text = float(right), f"{right:g}"
        margin = _margin(a, relation.op, relation.factor * b, tol)
        margins.append(margin)
        part = f"{left}={a:.4g} {relation.op} {right_text}"
        parts.append(part)
        if not _holds(margin, relation.op):
            failures.append(part)
    worst = math.nan if any(math.isnan(m) for m in margins) else min(margins)
    tol_text = f" (tolerance {tol:g}{' per step' if relation.along else ''})" if tol else ""
    if failures:
        return Verdict(passed=False, margin=worst, detail=f"{relation.text()}{tol_text} fails: " + "; ".join(failures))
    return Verdict(passed=True, margin=worst, detail=f"{relation.text()}{tol_text} holds: " + "; ".join(parts))


def _measurable(relation: Relation, measured: Mapping[str, float]) -> bool:
    if relation.along is not None:
        return len(index_values(relation.a, relation.along, measured)) >= 2
    if relation.for_every is None:
        return all(k in measured for k in relation.quantities)
    return bool(index_values(relation.a, relation.for_every, measured))


def claims_for(analysis: str, backbone: str, measured: Mapping[str, float]) -> list[Claim]:
    """The claims on one output of ``analysis`` on ``backbone`` whose quantities ``measured`` holds
    (family claims, which need an output per size, are evaluated through :func:`size_series`)."""
    return [c for c in CLAIMS if c.analysis == analysis and c.applies_to(backbone) and not isinstance(c, FamilyClaim)
            and _measurable(c.relation, measured)]


def check_all(analysis: str, output: AnalysisOutput, backbone: str, *, architecture: str | None = None,
              asserted: bool = True) -> list[tuple[Claim, Verdict]]:
    """Every claim that applies to one analysis output, evaluated; ``asserted`` False scores them (leaderboard mode).

    ``architecture`` is the SAE's (None for a backbone-level analysis): known misses can belong to one."""
    measured = output.quantities()
    return [(claim, scored(claim, evaluate(claim, measured), backbone, architecture, asserted))
            for claim in claims_for(analysis, backbone, measured)]


def scored(claim: Claim, verdict: Verdict, backbone: str, architecture: str | None, asserted: bool) -> Verdict:
    """``verdict`` as recorded: asserted in verify mode, except a known miss (:meth:`Claim.known_miss`)."""
    reason = claim.known_miss(backbone, architecture)
    if reason is not None:
        detail = f"{verdict.detail} [known planted miss: {reason}]"
        return verdict.model_copy(update={"asserted": False, "detail": detail, "known_miss": True})
    return verdict.model_copy(update={"asserted": asserted})


def family_claims(analysis: str, family: str) -> list[FamilyClaim]:
    """The family claims on ``analysis`` that cover ``family``."""
    return [c for c in CLAIMS if isinstance(c, FamilyClaim) and c.analysis == analysis and family in c.families]


def size_series(claim: FamilyClaim, family: str, measured: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``a[size=i]`` of each backbone of ``family`` in ``measured`` (backbone -> its output's quantities), ``i``
    its rank in the family's sizes, for :func:`evaluate`. A backbone without ``a`` is left out."""
    if family not in claim.families:
        raise KeyError(f"claim {claim.id} covers the families {', '.join(claim.families)}, not {family!r}")
    order = claim.families[family]
    strangers = sorted(set(measured) - set(order))
    if strangers:
        raise ValueError(f"{strangers} are not sizes of {family} ({', '.join(order)})")
    a = claim.relation.a
    return {indexed(a, rank, "size"): float(measured[name][a]) for rank, name in enumerate(order)
            if name in measured and a in measured[name]}


def backbones_of(*tables: str) -> tuple[str, ...]:
    """Every backbone a claim of the paper tables/figures ``tables`` covers (for a bench module's parametrisation)."""
    names = {b for c in CLAIMS if c.table in tables for b in c.backbones}
    if not names:
        known = sorted({c.table for c in CLAIMS})
        raise KeyError(f"no claim comes from {', '.join(map(repr, tables))}; claims come from {', '.join(known)}")
    return tuple(sorted(names))
