import pytest

from gpu_supply import gpus

REQUIRED = ["H200", "H100", "H100-PCIE", "H20", "H800", "A800", "A100-80GB", "A100", "L40S", "L40", "L20", "L4",
            "A10G", "A10", "T4", "V100", "RTX4090", "MI300X"]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_gpus_have_specs(name):
    spec = gpus.spec(name)
    assert spec is not None
    assert spec.memory_gb > 0 and spec.bandwidth_tbps > 0 and spec.bf16_tflops > 0


@pytest.mark.parametrize("raw, memory, expected", [
    ("NVIDIA H100 80GB HBM3", None, "H100"),
    ("nvidia-h100-80gb", None, "H100"),
    ("nvidia-h100-mega-80gb", None, "H100"),
    ("H100-SXM", None, "H100"),
    ("H100-NVLINK", None, "H100"),
    ("H100-MEGA", None, "H100"),
    ("NVIDIA-H100-80GB-HBM3", None, "H100"),
    ("H100 PCIe", None, "H100-PCIE"),
    ("H100 NVL", None, "H100-NVL"),
    ("h100", None, "H100"),
    ("nvidia-tesla-a100", None, "A100"),
    ("nvidia-a100-80gb", None, "A100-80GB"),
    ("A100", 80, "A100-80GB"),
    ("A100", 40, "A100"),
    ("A100 PCIe", 80, "A100-80GB"),
    ("Tesla V100-SXM2-32GB", None, "V100-32GB"),
    ("V100", 32, "V100-32GB"),
    ("nvidia-l4", None, "L4"),
    ("NVIDIA A10G", None, "A10G"),
    ("A10", None, "A10"),
    ("Tesla T4", None, "T4"),
    ("T4g", None, "T4"),
    ("GeForce RTX 4090", None, "RTX4090"),
    ("RTX 4090", None, "RTX4090"),
    ("AMD Instinct MI300X", None, "MI300X"),
    ("Radeon Pro V520", None, "V520"),
    ("H20", None, "H20"),
    ("H800", None, "H800"),
    ("A800 80GB", None, "A800"),
])
def test_supplier_spellings_resolve_to_one_canonical_name(raw, memory, expected):
    assert gpus.resolve(raw, memory) == expected


@pytest.mark.parametrize("raw", ["", "   ", "H1OO-QUANTUM", "RTX3060"])
def test_unknown_spellings_resolve_to_none(raw):
    assert gpus.resolve(raw) is None


@pytest.mark.parametrize("instance_type, expected", [
    ("Standard_ND96isr_H100_v5", "H100"),
    ("Standard_ND96is_MI300X_v5", "MI300X"),
    ("Standard_ND128isr_NDR_GB200_v6", "GB200"),
    ("Standard_NC16ads_A10_v4", "A10"),
    ("m5.large", None),
    ("Standard_NP10s", None),
])
def test_gpu_found_inside_instance_type(instance_type, expected):
    assert gpus.resolve_from_instance_type(instance_type) == expected


def test_suggest_offers_closest_names():
    assert "H100" in gpus.suggest("H10")
    assert "A100" in gpus.suggest("A1000") or "A100-80GB" in gpus.suggest("A1000")


def test_interconnect_follows_form_factor():
    assert gpus.spec("H100").interconnect == "nvlink"
    assert gpus.spec("L4").interconnect == "pcie"
    assert gpus.spec("MI300X").interconnect == "infinity-fabric"
