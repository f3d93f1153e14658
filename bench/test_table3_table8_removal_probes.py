"""Tables 3 and 8, Figure 8: what removing each CDS group does to linear probes."""
import pytest


@pytest.mark.backbones("table3")
def test_table3_removal_probes(workbench, backbone, sae_name, claim_report):
    result = workbench.result("removal_probes", backbone, sae_name, tasks=("cls", "seg", "depth"))
    claim_report.assert_held(*claim_report.record(result))


@pytest.mark.backbones("table8")
def test_table8_dense_removal_probes(workbench, backbone, sae_name, claim_report):
    result = workbench.result("removal_probes", backbone, sae_name, tasks=("seg", "depth"))
    claim_report.assert_held(*claim_report.record(result))


@pytest.mark.backbones("figure8")
def test_figure8_classification_removal(workbench, backbone, sae_name, claim_report):
    result = workbench.result("removal_probes", backbone, sae_name, tasks=("cls",))
    claim_report.assert_held(*claim_report.record(result))
