"""Pricing: normalised offers, their store and history, the embedded snapshot and cost comparisons.

Notebook API (pandas, loaded on first use so the CLI stays fast)::

    import pricing
    pricing.offers_frame(gpu="H100", geo="eu", pricing="on_demand")
    pricing.compare("H100", gpus=64, months=3, currency="CNY")
    pricing.price_history("aws", "us-east-1", "p5.48xlarge")
"""

_API = {"offers_frame", "compare", "price_history"}


def __getattr__(name: str):
    if name in _API:
        from pricing import api

        return getattr(api, name)
    raise AttributeError(f"module 'pricing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
