"""Figure 8: classification after feature-group removal across the sizes of each family."""
import numpy as np
import pytest

from scopebench.backbones.registry import REGISTRY
from scopebench.claims.registry import family_claims
from scopebench.plugin.bench import is_benched, sae_variants
from scopebench.results.plots import plot_removal_scaling
from scopebench.suite.workbench import Unavailable

FAMILIES = ("planted", "dinov2", "deit3", "siglip2", "clip")
EMBEDDINGS = ("original", "high_removed", "low_removed")


@pytest.mark.parametrize("family", FAMILIES)
def test_figure8_scaling_plot(workbench, family, plots_dir, pytestconfig, claim_report):
    results, reason = {}, ""
    left_out = [n for n, spec in REGISTRY.items() if spec.family == family and not is_benched(pytestconfig, n)]
    if left_out:
        reason = f"{', '.join(left_out)} left out by --planted-sizes; make bench-family benches every planted size"
    for name, spec in REGISTRY.items():
        if spec.family != family or name in left_out:
            continue
        try:
            sae_name = sae_variants(pytestconfig, name)[0]
            results[spec.size] = workbench.result("removal_probes", name, sae_name, tasks=("cls",))
        except Unavailable as err:
            reason = str(err)
    if not results:
        pytest.skip(f"no {family} backbone available: {reason}")
    sizes = list(results)
    measured = {size: result.output.quantities() for size, result in results.items()}
    accuracy = {e: [measured[size][f"cls_top1_{e}"] for size in sizes] for e in EMBEDDINGS}
    drawn = plot_removal_scaling(sizes, accuracy, plots_dir / f"figure8-{family}.png", title=f"Figure 8, {family}")
    for embedding in EMBEDDINGS:
        np.testing.assert_allclose(drawn[embedding], accuracy[embedding])
        assert all(0.0 <= v <= 100.0 for v in accuracy[embedding]), accuracy
    claims = family_claims("removal_probes", family)
    if claims and len(results) < 2:
        pytest.skip(f"{', '.join(c.id for c in claims)}: needs two or more sizes of {family}, measured "
                    f"{', '.join(r.backbone.name for r in results.values())} only ({reason or 'the family has one'})")
    claim_report.assert_held(*(claim_report.record_family(claim, family, list(results.values())) for claim in claims))
