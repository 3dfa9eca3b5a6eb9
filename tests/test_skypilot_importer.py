"""The importer on hand-written SkyPilot-format fixtures: every row accounted for, every trait handled."""

from datetime import datetime, timezone

import pytest

from conftest import FIXTURES
from gpu_supply.errors import UserError
from pricing.skypilot import catalog_files, import_catalog_dir, import_catalog_file

WHEN = datetime(2026, 5, 20, tzinfo=timezone.utc)
ROOT = FIXTURES / "skypilot"


def _read(cloud):
    offers, report = import_catalog_file(ROOT / cloud / "vms.csv", cloud, WHEN)
    assert report.balanced, report.summary_lines()
    return {(o.instance_type, o.zone or o.region, o.pricing.value): o for o in offers}, report


def test_aws_rows_fractions_and_missing_spot():
    offers, report = _read("aws")
    assert report.rows_read == 5 and report.rows_used == 3
    p5 = offers[("p5.48xlarge", "use1-az2", "on_demand")]
    assert (p5.gpu, p5.gpu_count, p5.price_per_hour, p5.interconnect) == ("H100", 8, 55.04, "nvlink")
    assert offers[("p5.48xlarge", "use1-az2", "spot")].price_per_hour == 20.1
    assert ("p5.48xlarge", "use1-az4", "spot") not in offers  # empty spot price: no spot offer
    assert offers[("p3dn.24xlarge", "use1-az6", "on_demand")].gpu == "V100-32GB"
    assert ("p3dn.24xlarge", "use1-az6", "spot") not in offers  # spot == on-demand: no spot market
    assert report.skipped == {"fractional GPU (a slice of one GPU, not a whole GPU)": 1,
                              "no GPU (CPU-only or non-GPU accelerator)": 1}
    assert report.no_spot == {"spot price missing": 1, "spot equals on-demand (no spot market)": 1}


def test_gcp_nodes_are_host_plus_accelerators():
    offers, report = _read("gcp")
    a3 = offers[("a3-highgpu-8g", "us-central1-a", "on_demand")]
    assert a3.price_per_hour == pytest.approx(90.0) and a3.gpu == "H100" and a3.gpu_count == 8
    assert a3.vcpus == 208.0 and a3.ram_gb == 1872.0
    assert offers[("a3-highgpu-8g", "us-central1-a", "spot")].price_per_hour == pytest.approx(24.0)
    t4 = offers[("n1-standard-8", "us-central1-a", "on_demand")]
    assert (t4.gpu, t4.gpu_count, t4.price_per_hour) == ("T4", 1, pytest.approx(0.73))
    assert report.composed == 2
    assert report.rows_read == 8 and report.rows_used == 4
    assert report.skipped == {
        "GPU host with no accelerator price in its zone": 1,  # a3 in europe-west4 has no H100 row
        "no GPU (CPU-only or non-GPU accelerator)": 1,
        "accelerator price with no host machine type in its zone": 1,  # V100:2 needs n1-standard-16
        "TPU, not a GPU": 1,
    }


def test_azure_generation_gpu_counts_and_names():
    offers, report = _read("azure")
    nd = offers[("Standard_ND96isr_H100_v5", "eastus", "on_demand")]
    assert nd.gpu_count == 8  # the catalog says 12
    assert ("Standard_ND96isr_H100_v5", "eastus", "spot") not in offers
    assert offers[("Standard_NC24ads_A100_v4", "eastus", "spot")].price_per_hour == 0.73
    mi = offers[("Standard_ND96is_MI300X_v5", "canadacentral", "on_demand")]
    assert (mi.gpu, mi.gpu_count, mi.gpu_memory_gb) == ("MI300X", 8, 192)
    assert report.fixed["unquoted Generation field (V1,V2) re-joined"] == 2
    assert report.fixed["GPU count 12 -> 8 for Standard_ND96isr_H100_v5"] == 1
    assert report.fixed["GPU count missing -> 8 for Standard_ND96is_MI300X_v5"] == 1
    assert report.skipped == {"fractional GPU (a slice of one GPU, not a whole GPU)": 1,
                              "accelerator with no name (not a GPU)": 1,
                              "no GPU (CPU-only or non-GPU accelerator)": 1,
                              "malformed row (4 fields, header has 10)": 1}
    assert report.rows_read == 8 and report.rows_used == 4


def test_runpod_memory_in_gb_and_pcie_name():
    offers, report = _read("runpod")
    offer = offers[("1x_A100-80GB_SECURE", "CA-MTL-1", "on_demand")]
    assert offer.gpu == "A100-80GB" and offer.gpu_memory_gb == 80
    assert report.fixed["GPU memory given in GB under SizeInMiB"] == 1


def test_bid_floor_prices_are_rejected_not_imported():
    offers, report = _read("mithril")
    assert [key[0] for key in offers] == ["h100-80gb.sxm.8x"]
    assert report.skipped == {"every price below plausibility floor": 1}


def test_directory_import_and_report_text():
    offers, reports = import_catalog_dir(ROOT, ["aws", "gcp"], WHEN)
    assert {o.provider for o in offers} == {"aws", "gcp"}
    text = "\n".join(line for report in reports for line in report.summary_lines())
    assert "aws: read 5 rows" in text and "skipped: 1 rows: TPU, not a GPU" in text


def test_unknown_cloud_is_a_clear_error():
    with pytest.raises(UserError, match="clouds found: .*aws"):
        catalog_files(ROOT, ["oracle"])


def test_unregistered_gpu_names_are_kept_and_counted(tmp_path):
    (tmp_path / "vast").mkdir()
    (tmp_path / "vast" / "vms.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region\n"
        "1x-RTX_3060,RTX3060,1,8,16,,0.07,0.00,\"Texas, US, NA\"\n")
    offers, (report,) = import_catalog_dir(tmp_path, None, WHEN)
    assert [o.gpu for o in offers] == ["RTX3060"]
    assert report.unknown_gpus == {"RTX3060": 1}
    assert report.no_spot == {"spot price zero (no spot market)": 1}


def test_region_names_with_an_empty_part_lose_it_and_are_counted(tmp_path):
    (tmp_path / "vast").mkdir()
    (tmp_path / "vast" / "vms.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region\n"
        "1x-RTX_4090-16-32768,RTX4090,1,16,32,,0.35,0.00,\", US, NA\"\n"
        "2x-RTX_4090-16-32768,RTX4090,2,16,32,,0.70,0.00,\"Texas, US, NA\"\n")
    offers, (report,) = import_catalog_dir(tmp_path, None, WHEN)
    assert sorted((o.region, o.geo) for o in offers) == [("Texas, US, NA", "us"), ("US, NA", "us")]
    assert report.fixed == {"region name with an empty part tidied (Vast's ', US, NA')": 1}
    assert report.balanced
