"""Pricing: normalised offers, their store and history, the embedded snapshot and cost comparisons.

Notebook API (pandas, loaded on first use so the CLI stays fast)::

    import pricing
    pricing.offers_frame(gpu="H100", geo="eu", pricing="on_demand")
    pricing.compare("H100", gpus=64, months=3, currency="CNY")
    pricing.current_offers(geo="eu")                      # Offer objects, for scheduler.plan
    pricing.price_history("aws", "us-east-1", "p5.48xlarge")
    pricing.price_spread(pricing.offers_frame())          # regional spread per GPU x provider x pricing
    pricing.cheapest_sources(["H100", "A100-80GB"], gpus=8, months=1)
    pricing.commitment_options("H100", reserved_1y_discount=0.35)

Commit-versus-on-demand maths (break-even utilisation, best commitment) is in pricing.economics.
"""

_API = {"offers_frame", "current_offers", "compare", "price_history", "price_spread", "cheapest_sources", "commitment_options"}


def __getattr__(name: str):
    if name in _API:
        from pricing import api

        return getattr(api, name)
    raise AttributeError(f"module 'pricing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
