import pytest

from gpu_supply.errors import UserError
from pricing.fx import DEFAULT_RATES_AS_OF, FxTable, load_fx, parse_overrides


def test_default_table_is_dated_and_converts_both_ways():
    fx = FxTable()
    assert DEFAULT_RATES_AS_OF
    assert fx.convert(71.0, "CNY", "USD") == pytest.approx(10.0)
    assert fx.convert(10.0, "USD", "CNY") == pytest.approx(71.0)
    assert fx.convert(5.0, "EUR", "EUR") == 5.0


def test_cli_overrides_beat_config_which_beats_defaults():
    fx = load_fx(["CNY=7.2"], {"fx": {"CNY": 6.9, "EUR": 0.9}})
    assert fx.rate("CNY") == 7.2
    assert fx.rate("EUR") == 0.9
    assert load_fx(None, {"fx": {"cny": 6.9}}).rate("CNY") == 6.9


def test_overrides_accept_commas_and_new_currencies():
    assert parse_overrides(["CNY=7.1,XYZ=3"]) == {"CNY": 7.1, "XYZ": 3.0}


@pytest.mark.parametrize("item", ["CNY", "CNY=abc", "CNY=-1", "CNY=0", "C1Y=7", "USD=2", "CNY=inf"])
def test_malformed_fx_is_a_clear_error(item):
    with pytest.raises(UserError) as caught:
        parse_overrides([item])
    assert caught.value.field.startswith("--fx")


def test_unknown_currency_names_the_fix():
    with pytest.raises(UserError, match="--fx ABC=RATE"):
        FxTable().rate("ABC")
