"""Supplier adapters: one module per supplier, each yielding normalised `gpu_supply.offer.Offer`s.

Today: ``idc`` (IDC term deals from YAML/CSV files). The live cloud adapters (AWS, GCP, Azure)
arrive with `gpu-supply refresh` (issue #4) behind the same output type.
"""
