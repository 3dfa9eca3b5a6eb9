"""GPU registry: every supplier's spelling of a GPU maps to one canonical name with its specs.

Suppliers name the same chip many ways (``NVIDIA H100 80GB HBM3``, ``nvidia-h100-80gb``,
``H100-SXM``, the ``H100`` inside ``Standard_ND96isr_H100_v5``). Everything downstream
(filters, comparisons, the optimizer's throughput model) works on the canonical name, so
resolution lives here, once.

Specs are the vendors' datasheet figures for one GPU: memory (GB), HBM/GDDR bandwidth (TB/s)
and dense BF16 tensor TFLOPS (FP16 for chips without BF16: T4, V100, P100, K80, M60).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    vendor: str
    memory_gb: float
    bandwidth_tbps: float
    bf16_tflops: float
    form_factor: str  # sxm | pcie | oam | superchip
    aliases: tuple[str, ...] = ()

    @property
    def interconnect(self) -> str:
        """Intra-node GPU link of multi-GPU nodes built from this part."""
        return {"sxm": "nvlink", "superchip": "nvlink", "oam": "infinity-fabric"}.get(self.form_factor, "pcie")


_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("B300", "nvidia", 288, 8.0, 2250, "sxm", ("B300-SXM", "HGX B300")),
    GpuSpec("B200", "nvidia", 180, 8.0, 2250, "sxm", ("B200-SXM", "HGX B200")),
    GpuSpec("GB200", "nvidia", 186, 8.0, 2500, "superchip", ("GB200-NVL72", "GB200 NVL72")),
    GpuSpec("GH200", "nvidia", 96, 4.0, 989, "superchip", ("GH200-96GB", "GH200 Grace Hopper")),
    GpuSpec("H200", "nvidia", 141, 4.8, 989, "sxm", ("H200-SXM", "H200 141GB", "H200-141GB", "H200 NVL")),
    GpuSpec("H100", "nvidia", 80, 3.35, 989, "sxm",
            ("H100-SXM", "H100-SXM5", "H100 80GB HBM3", "H100-80GB", "H100-MEGA", "H100-MEGA-80GB",
             "H100-NVLINK", "H100 SXM5 80GB", "H100-80GB-HBM3")),
    GpuSpec("H100-PCIE", "nvidia", 80, 2.0, 756, "pcie", ("H100 PCIe", "H100-PCIe-80GB", "H100 80GB PCIe")),
    GpuSpec("H100-NVL", "nvidia", 94, 3.9, 835, "pcie", ("H100 NVL", "H100-94GB")),
    GpuSpec("H800", "nvidia", 80, 3.35, 989, "sxm", ("H800-SXM", "H800 80GB")),
    GpuSpec("H20", "nvidia", 96, 4.0, 148, "sxm", ("H20-96GB", "H20 96GB")),
    GpuSpec("A800", "nvidia", 80, 2.0, 312, "sxm", ("A800-SXM", "A800 80GB", "A800-80GB")),
    GpuSpec("A100-80GB", "nvidia", 80, 2.04, 312, "sxm",
            ("A100 80GB", "A100-SXM4-80GB", "A100-80GB-SXM", "A100 80GB PCIe", "A100-80GB-PCIE", "A100 SXM4 80GB")),
    GpuSpec("A100", "nvidia", 40, 1.56, 312, "sxm", ("A100-40GB", "A100-SXM4-40GB", "A100 40GB", "Tesla A100")),
    GpuSpec("A30", "nvidia", 24, 0.93, 165, "pcie", ()),
    GpuSpec("L40S", "nvidia", 48, 0.864, 362, "pcie", ("L40S-48GB",)),
    GpuSpec("L40", "nvidia", 48, 0.864, 181, "pcie", ("L40-48GB",)),
    GpuSpec("L20", "nvidia", 48, 0.864, 119.5, "pcie", ("L20-48GB",)),
    GpuSpec("L4", "nvidia", 24, 0.3, 121, "pcie", ("L4-24GB",)),
    GpuSpec("A10G", "nvidia", 24, 0.6, 70, "pcie", ()),
    GpuSpec("A10", "nvidia", 24, 0.6, 125, "pcie", ("A10-24GB",)),
    GpuSpec("A40", "nvidia", 48, 0.696, 150, "pcie", ()),
    GpuSpec("RTXA6000", "nvidia", 48, 0.768, 155, "pcie", ("RTX A6000", "A6000")),
    GpuSpec("RTXA5000", "nvidia", 24, 0.768, 111, "pcie", ("RTX A5000", "A5000")),
    GpuSpec("RTXA4000", "nvidia", 16, 0.448, 77, "pcie", ("RTX A4000", "A4000")),
    GpuSpec("RTX6000", "nvidia", 24, 0.672, 130, "pcie", ("Quadro RTX 6000", "RTX 6000")),
    GpuSpec("RTX6000-Ada", "nvidia", 48, 0.96, 182, "pcie", ("RTX 6000 Ada", "RTX6000Ada", "RTX 6000 Ada Generation")),
    GpuSpec("RTXPRO6000", "nvidia", 96, 1.79, 504, "pcie",
            ("RTX PRO 6000", "RTXPRO6000WS", "RTX PRO 6000 Blackwell", "RTX PRO Server 6000", "RTXPRO6000-SE")),
    GpuSpec("RTX5090", "nvidia", 32, 1.79, 210, "pcie", ("RTX 5090", "GeForce RTX 5090")),
    GpuSpec("RTX4090", "nvidia", 24, 1.01, 165, "pcie", ("RTX 4090", "GeForce RTX 4090")),
    GpuSpec("RTX3090", "nvidia", 24, 0.94, 71, "pcie", ("RTX 3090", "GeForce RTX 3090")),
    GpuSpec("T4", "nvidia", 16, 0.32, 65, "pcie", ("Tesla T4", "T4G")),
    GpuSpec("V100-32GB", "nvidia", 32, 0.9, 125, "sxm", ("V100 32GB", "Tesla V100-SXM2-32GB")),
    GpuSpec("V100", "nvidia", 16, 0.9, 125, "sxm", ("Tesla V100", "V100-16GB", "Tesla V100-SXM2-16GB")),
    GpuSpec("P100", "nvidia", 16, 0.73, 18.7, "pcie", ("Tesla P100",)),
    GpuSpec("P4", "nvidia", 8, 0.19, 5.5, "pcie", ("Tesla P4",)),
    GpuSpec("M60", "nvidia", 8, 0.16, 4.8, "pcie", ("Tesla M60",)),
    GpuSpec("K80", "nvidia", 12, 0.24, 4.1, "pcie", ("Tesla K80",)),
    GpuSpec("MI325X", "amd", 256, 6.0, 1307, "oam", ("Instinct MI325X",)),
    GpuSpec("MI300X", "amd", 192, 5.3, 1307, "oam", ("Instinct MI300X",)),
    GpuSpec("MI25", "amd", 16, 0.48, 24.6, "pcie", ("Radeon Instinct MI25",)),
    GpuSpec("V520", "amd", 8, 0.51, 14.7, "pcie", ("Radeon Pro V520",)),
)

_BY_NAME: dict[str, GpuSpec] = {spec.name: spec for spec in _SPECS}

# Words suppliers wrap around a chip name that say nothing about which chip it is.
_NOISE = re.compile(r"\b(NVIDIA|TESLA|AMD|RADEON|INSTINCT|GEFORCE|GPU|NVIDIA-TESLA)\b")
_MEMORY = re.compile(r"(\d{2,3})\s*G(?:B|IB)?\b")


def _squash(text: str) -> str:
    """Canonical comparison form: upper case, no vendor words, no separators."""
    upper = _NOISE.sub(" ", text.upper().replace("_", " ").replace("-", " "))
    return re.sub(r"[^A-Z0-9]", "", upper)


_ALIAS_INDEX: dict[str, str] = {}
for _spec in _SPECS:
    for _spelling in (_spec.name, *_spec.aliases):
        _ALIAS_INDEX.setdefault(_squash(_spelling), _spec.name)

# Chips sold in several memory sizes: the base name plus the memory decides the canonical name.
_MEMORY_VARIANTS: dict[str, dict[int, str]] = {
    "A100": {40: "A100", 80: "A100-80GB"},
    "V100": {16: "V100", 32: "V100-32GB"},
    "H100": {80: "H100", 94: "H100-NVL"},
}


def known_names() -> list[str]:
    return [spec.name for spec in _SPECS]


def spec(name: str) -> GpuSpec | None:
    """Specs of a canonical name; None for names the registry does not know (kept raw)."""
    return _BY_NAME.get(name)


def resolve(raw: str, memory_gb: float | None = None) -> str | None:
    """Canonical name for a supplier's spelling, or None when the registry does not know it.

    ``memory_gb`` (per GPU) disambiguates chips sold in several sizes, e.g. an ``A100``
    row with 80 GB is an ``A100-80GB``.
    """
    if not raw or not raw.strip():
        return None
    text = raw.strip()
    is_pcie = "PCIE" in text.upper()
    memory = memory_gb
    found = _ALIAS_INDEX.get(_squash(text))
    if found is None:
        # Strip memory/packaging suffixes (``nvidia-h100-80gb``, ``H100 80GB HBM3``) and retry.
        match = _MEMORY.search(text.upper())
        if match and memory is None:
            memory = float(match.group(1))
        core = _MEMORY.sub(" ", text.upper())
        core = re.sub(r"\b(HBM3E?|HBM2E?|SXM\d?|PCIE|NVL|MEGA|NVLINK|SECURE|COMMUNITY)\b", " ", core.replace("-", " "))
        found = _ALIAS_INDEX.get(_squash(core))
    if found is None:
        return None
    if found == "H100" and is_pcie:
        return "H100-PCIE"
    variants = _MEMORY_VARIANTS.get(found)
    if variants and memory:
        nearest = min(variants, key=lambda size: abs(size - memory))
        if abs(nearest - memory) <= 8:
            return variants[nearest]
    return found


def resolve_from_instance_type(instance_type: str) -> str | None:
    """Find a GPU named inside an instance type, e.g. ``Standard_ND96isr_H100_v5`` -> ``H100``."""
    for token in re.split(r"[_.\-]", instance_type):
        if len(token) >= 2 and not token.upper().startswith("STANDARD"):
            found = _ALIAS_INDEX.get(_squash(token))
            if found:
                return found
    return None


def suggest(raw: str, limit: int = 3) -> list[str]:
    """Closest known names for an unknown spelling (for error messages)."""
    by_squashed = {_squash(spec.name): spec.name for spec in _SPECS}
    candidates = difflib.get_close_matches(_squash(raw), list(_ALIAS_INDEX), n=limit * 3, cutoff=0.4)
    names: list[str] = []
    for candidate in candidates:
        name = by_squashed.get(candidate) or _ALIAS_INDEX[candidate]
        if name not in names:
            names.append(name)
    return names[:limit]
