import pytest

from conftest import REPO
from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, PricingModel
from providers.idc import parse_idc_text, read_idc_files

ROW = ("site: sh-1\n    city: Shanghai\n    region: cn-shanghai\n    gpu: H100\n    gpus_per_node: 8\n"
       "    price_per_node_month: 75000\n    currency: CNY\n    min_term_months: 3\n")


def _yaml(extra: str = "", row: str = ROW) -> str:
    return f"format: gpu-supply-idc/1\nobserved_at: 2026-11-01\noffers:\n  - {row}{extra}"


def test_example_file_parses_into_contract_offers():
    offers = read_idc_files([REPO / "examples" / "idc-offers.yaml"])
    assert len(offers) == 10
    assert {o.pricing for o in offers} == {PricingModel.CONTRACT}
    shanghai = next(o for o in offers if o.zone == "sh-pudong-1" and o.gpu == "H100")
    assert shanghai.price_per_hour * HOURS_PER_MONTH == pytest.approx(68000)
    assert shanghai.min_term_hours == 3 * HOURS_PER_MONTH
    assert (shanghai.currency, shanghai.geo, shanghai.available_nodes, shanghai.source) == ("CNY", "cn", 12, "idc-examples")
    rtx = next(o for o in offers if o.gpu == "RTX4090")
    assert rtx.price_per_hour * HOURS_PER_MONTH == pytest.approx(1350 * 8)  # priced per GPU-month


def test_csv_format_reads_the_same_fields(tmp_path):
    path = tmp_path / "broker.csv"
    path.write_text("site,city,region,gpu,gpus_per_node,nodes_available,price_per_gpu_month,currency,min_term_months,"
                    "lead_time_days\nbj-1,Beijing,cn-beijing,A800,8,5,4000,CNY,1,3\n")
    (offer,) = read_idc_files([tmp_path])
    assert offer.price_per_hour == pytest.approx(32000 / HOURS_PER_MONTH)
    assert (offer.available_nodes, offer.lead_time_days, offer.source) == (5, 3, "idc:broker")


@pytest.mark.parametrize("document, field, message", [
    (_yaml(row=ROW.replace("H100", "H1OO")), "offers[0].gpu", "did you mean"),
    (_yaml("    price_per_gpu_month: 9000\n"), "offers[0]", "exactly one of"),
    (_yaml(row=ROW.replace("gpus_per_node: 8", "gpus_per_node: -8")), "offers[0].gpus_per_node", "greater than"),
    (_yaml("    colour: blue\n"), "offers[0].colour", "Extra inputs"),
    (_yaml(row=ROW.replace("    city: Shanghai\n", "")), "offers[0].city", "Field required"),
    ("format: gpu-supply-idc/9\noffers: []\n", "x.yaml.format", "unsupported format"),
    ("offers: [\n", "x.yaml", "not valid YAML"),
    ("offers: []\n", "x.yaml", "no offers"),
])
def test_bad_idc_files_name_the_field(document, field, message):
    with pytest.raises(UserError) as caught:
        parse_idc_text(document, "x.yaml", "idc:x")
    assert field in caught.value.field
    assert message in caught.value.line()
    assert "\n" not in caught.value.line()


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_idc_files([tmp_path / "nope.yaml"])
