"""Figure 6 and Table 4 quantities derived from the CDS output: high-CDS share, mode peaks, valley depth."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scopebench.analyses import CDSOutput
from scopebench.analyses.cds.compute import histogram
from scopebench.analyses.cds.output import CDSHistogram
from scopebench.claims.registry import check_all
from scopebench.results.records import load_result

EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
ROOT = Path(__file__).resolve().parents[1]


def _output(counts: list[int], gamma: float, edges: list[float] = EDGES) -> CDSOutput:
    n_low = sum(c for c, lo, hi in zip(counts, edges, edges[1:]) if (lo + hi) / 2 <= gamma)
    return CDSOutput(gamma=gamma, n_low=n_low, n_high=sum(counts) - n_low,
                     histogram=CDSHistogram(edges=edges, counts=counts))


def test_peaks_and_valley_of_a_hand_built_histogram() -> None:
    out = _output([2, 40, 12, 4, 10, 6], gamma=0.3)  # centres 0.05 .. 0.55: low bins 0-2, high bins 3-5
    assert (out.cds_peak_low, out.cds_peak_high) == (40, 10)
    assert out.cds_valley_depth == pytest.approx(1 - 4 / 10)  # floor 4 between the peaks, lower peak 10
    assert out.high_share == pytest.approx(20 / 74)
    found = {c.id: v for c, v in check_all("cds", out, "dinov2-b")}
    assert set(found) == {"figure6.cds-low-mode-dominant", "figure6.cds-high-mode-separate"}
    assert found["figure6.cds-low-mode-dominant"].margin == 30.0
    assert found["figure6.cds-high-mode-separate"].passed
    assert found["figure6.cds-high-mode-separate"].margin == pytest.approx(0.6 - 0.5)
    shallow = {c.id: v for c, v in check_all("cds", _output([2, 40, 12, 8, 10, 6], gamma=0.3), "dinov2-b")}
    assert not shallow["figure6.cds-high-mode-separate"].passed  # the dip to 8 is only 20% below the peak of 10
    tall_high = {c.id: v for c, v in check_all("cds", _output([2, 9, 1, 0, 30, 6], gamma=0.3), "dinov2-b")}
    assert not tall_high["figure6.cds-low-mode-dominant"].passed and tall_high["figure6.cds-high-mode-separate"].passed


def test_degenerate_histograms() -> None:
    adjacent = _output([1, 2, 30, 20, 3, 1], gamma=0.25)  # peaks in bins 2 and 3: nothing between them
    assert adjacent.cds_valley_depth == 0.0
    no_high = _output([5, 30, 8, 0, 0, 0], gamma=0.3)
    assert (no_high.cds_peak_high, no_high.cds_valley_depth) == (0.0, 0.0)
    gamma_past_every_bin = _output([5, 30, 8, 1, 0, 2], gamma=0.9)
    assert (gamma_past_every_bin.cds_peak_high, gamma_past_every_bin.cds_valley_depth) == (0.0, 0.0)
    no_partition = CDSOutput(gamma=math.nan, n_low=math.nan, n_high=math.nan,
                             histogram=CDSHistogram(edges=EDGES, counts=[1, 2, 3, 2, 1, 0]), no_partition="unimodal")
    q = no_partition.quantities()
    assert all(math.isnan(q[k]) for k in ("high_share", "cds_peak_low", "cds_peak_high", "cds_valley_depth"))
    assert all(not v.passed for _, v in check_all("cds", no_partition, "siglip2-b"))  # NaN fails, never vanishes
    assert "cds_valley_depth" not in CDSOutput(gamma=0.2, n_low=3, n_high=1).quantities()  # no histogram: not run
    assert math.isnan(CDSOutput(gamma=0.2, n_low=0, n_high=0).high_share)  # no scored feature


def test_derived_values_cannot_disagree_with_their_inputs() -> None:
    out = CDSOutput.model_validate({"gamma": 0.3, "n_low": 3, "n_high": 1, "high_share": 0.9})
    assert out.high_share == 0.25


def test_on_a_bimodal_cds_sample_against_numpy() -> None:
    rng = np.random.default_rng(0)
    cds = np.concatenate([rng.beta(2, 30, 800), 0.5 + 0.1 * rng.standard_normal(200), [np.nan] * 5])
    cds = np.clip(cds, 0.0, 1.0)
    gamma = 0.3
    hist = histogram(cds)
    out = CDSOutput(gamma=gamma, n_low=float((cds <= gamma).sum()), n_high=float((cds > gamma).sum()),
                    histogram=hist)
    counts, edges = np.histogram(cds[np.isfinite(cds)], bins=len(hist.counts), range=(0.0, np.nanmax(cds)))
    centres = (edges[:-1] + edges[1:]) / 2
    low, high = np.flatnonzero(centres <= gamma), np.flatnonzero(centres > gamma)
    i, j = low[np.argmax(counts[low])], high[np.argmax(counts[high])]
    assert (out.cds_peak_low, out.cds_peak_high) == (counts[i], counts[j])
    assert out.cds_valley_depth == pytest.approx(1 - counts[i:j + 1].min() / min(counts[i], counts[j]))
    assert out.cds_valley_depth > 0.5 and out.high_share == pytest.approx(200 / 1000, abs=0.02)


@pytest.mark.parametrize("path", sorted([*(ROOT / "leaderboard" / "results").glob("*__*.json"),
                                         *(ROOT / "bench" / "baseline").glob("*__*.json")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_result_files_gain_the_quantities_when_read(path: Path) -> None:
    """Read, a committed file carries the derived quantities, computed from its stored fields (and a file with no
    CDS partition, TopK's on planted, none of them)."""
    record = load_result(path)
    cds = record.output("cds")
    if cds.n_high is None or cds.gamma is None:
        assert cds.high_share is None and cds.cds_peak_low is None and cds.cds_peak_high is None
    else:
        assert cds.high_share == pytest.approx(cds.n_high / (cds.n_low + cds.n_high))
        counts = np.array(cds.histogram.counts)
        centres = np.convolve(cds.histogram.edges, [0.5, 0.5], mode="valid")
        assert cds.cds_peak_low == counts[centres <= cds.gamma].max()
        assert cds.cds_peak_high == counts[centres > cds.gamma].max()
    assert any(verdict.margin is not None for verdict in record.claims.values())  # recorded since margins exist
