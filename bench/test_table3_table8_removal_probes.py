"""Tables 3 and 8, Figure 8: what removing each CDS group does to linear probes."""
import pytest

# claim id -> the two quantities it compares (each claim's relation is in scopebench.claims)
COMPARED = {
    "seg-low-removal-hurts-more": ("seg_miou_low_removed", "seg_miou_high_removed"),
    "depth-low-removal-hurts-more": ("depth_rmse_low_removed", "depth_rmse_high_removed"),
    "cls-high-removal-harmless": ("cls_top1_high_removed", "cls_top1_original"),
    "cls-low-removal-hurts": ("cls_top1_low_removed", "cls_top1_original"),
}


def _measure_and_check(workbench, claim_report, backbone, sae_name, table, tasks, claims):
    values = {}
    for task in tasks:
        values.update(workbench.probes(backbone, sae_name, task))
    claim_report.measure(backbone=backbone, sae=sae_name, table=table, values=values,
                         **workbench.sae_identity(backbone, sae_name))
    verdicts = [claim_report.check(f"{table}.{claim}", backbone=backbone, sae=sae_name,
                                   measured={k: values[k] for k in COMPARED[claim]}) for claim in claims]
    claim_report.assert_held(*verdicts)


@pytest.mark.claim("table3.seg-low-removal-hurts-more")
def test_table3_removal_probes(workbench, backbone, sae_name, claim_report):
    _measure_and_check(workbench, claim_report, backbone, sae_name, "table3", ("cls", "seg", "depth"),
                       ("seg-low-removal-hurts-more", "depth-low-removal-hurts-more", "cls-high-removal-harmless"))


@pytest.mark.claim("table8.seg-low-removal-hurts-more")
def test_table8_dense_removal_probes(workbench, backbone, sae_name, claim_report):
    _measure_and_check(workbench, claim_report, backbone, sae_name, "table8", ("seg", "depth"),
                       ("seg-low-removal-hurts-more", "depth-low-removal-hurts-more"))


@pytest.mark.claim("figure8.cls-high-removal-harmless")
def test_figure8_classification_removal(workbench, backbone, sae_name, claim_report):
    _measure_and_check(workbench, claim_report, backbone, sae_name, "figure8", ("cls",),
                       ("cls-high-removal-harmless", "cls-low-removal-hurts"))
