"""`gpu-supply`: compare what GPU capacity costs at every supplier, region and pricing model.

Start-up stays fast: this module imports only typer, rich and the light core; the store's ORM,
pandas, OR-Tools, Ray and cloud SDKs load inside the commands that need them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpu_supply import gpus as gpu_registry
from gpu_supply import settings
from gpu_supply.errors import UserError
from gpu_supply.offer import as_utc

app = typer.Typer(help="Compare what GPU capacity costs at every supplier, region and pricing model.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
catalog_app = typer.Typer(help="Manage the offer store: import catalogs and IDC offers, show what it holds.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

# Piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column fallback.
stdout = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 200)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


# Options shared by `offers` and `compare`.
GpuOpt = Annotated[Optional[list[str]], typer.Option("--gpu", help="GPU (canonical or alias); repeat or comma-separate.")]
MinMemOpt = Annotated[Optional[float], typer.Option("--min-gpu-memory", help="Minimum memory per GPU, GB.")]
PerNodeOpt = Annotated[Optional[list[str]], typer.Option("--gpus-per-node", help="GPUs per node, e.g. 8; repeatable.")]
ProviderOpt = Annotated[Optional[list[str]], typer.Option("--provider", help="aws, gcp, azure, lambda, idc, ...")]
RegionOpt = Annotated[Optional[list[str]], typer.Option("--region", help="Region name or prefix (us-east, europe-).")]
GeoOpt = Annotated[Optional[list[str]], typer.Option("--geo", help="us, ca, latam, eu, me, africa, apac, cn.")]
PricingOpt = Annotated[Optional[list[str]], typer.Option("--pricing", help="on_demand, spot, reserved_1y, reserved_3y, contract.")]
MaxPriceOpt = Annotated[Optional[float], typer.Option("--max-price", help="Max price per GPU-hour, in --currency.")]
CurrencyOpt = Annotated[str, typer.Option("--currency", help="Currency to show prices in.")]
FxOpt = Annotated[Optional[list[str]], typer.Option("--fx", help="Exchange rate per 1 USD, e.g. CNY=7.1.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, json or csv.")]
MaxAgeOpt = Annotated[Optional[str], typer.Option("--max-age", help="Leave out offers older than this (90m, 6h, 7d); refuse if none is left.")]


def _split(values: Optional[Iterable[str]]) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _build_query(gpu, min_gpu_memory, gpus_per_node, provider, region, geo, pricing, max_price, currency, fx):
    """Validate the shared filters into an OfferQuery, an FX table and a reader of the store."""
    from pricing.fx import load_fx
    from pricing.query import OfferReader, build_query

    fx_table = load_fx(fx, settings.load_config())
    reader = OfferReader(settings.database_url())
    if reader.seeded is not None:
        stderr.print(f"[dim]Seeded the offer store from the embedded snapshot "
                     f"({reader.seeded.offers:,} offers) at {settings.database_url()}[/dim]")
    query = build_query(gpus=_split(gpu), min_gpu_memory=min_gpu_memory, gpus_per_node=_split(gpus_per_node),
                        providers=_split(provider), regions=_split(region), geos=_split(geo), pricing=_split(pricing),
                        max_price=max_price, currency=currency, known_providers=reader.providers() if provider else None,
                        fx=fx_table)
    return query, fx_table, reader


def _money(value: float | None, currency: str, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    symbol = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥"}.get(currency, "")
    return f"{symbol}{value:,.{digits}f}" + ("" if symbol else f" {currency}")


def _hours_text(hours: float) -> str:
    if hours == 0:
        return "-"
    months = hours / 730
    return f"{months:g} mo" if months >= 1 and float(months).is_integer() else f"{hours:g} h"


FOLDING = {"Region", "Instance", "Status"}  # free text: folds onto more lines on narrow terminals


def _print_table(title: str, columns: list[tuple[str, str]], rows: list[tuple[list[str], str | None]],
                 drop_first: list[str]) -> None:
    """Print a table, leaving out the ``drop_first`` columns (in order) until it fits the console."""
    kept = [name for name, _ in columns]

    def needed(names: list[str]) -> int:
        widths = []
        for name in names:
            index = [column for column, _ in columns].index(name)
            longest = max([len(name)] + [len(cells[index]) for cells, _ in rows])
            widths.append(min(longest, 12) if name in FOLDING else longest)
        return sum(widths) + 3 * len(names) + 1

    for name in drop_first:
        if needed(kept) <= stdout.width:
            break
        kept.remove(name)
    table = Table(title=title, title_justify="left")
    for name, justify in columns:
        if name in kept:
            table.add_column(name, justify=justify, **({"overflow": "fold", "min_width": 8} if name in FOLDING
                                                        else {"no_wrap": True}))
    positions = [index for index, (name, _) in enumerate(columns) if name in kept]
    for cells, style in rows:
        table.add_row(*(cells[index] for index in positions), style=style)
    stdout.print(table)


def _emit_rows(rows: list[dict], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    buffer = io.StringIO()
    flat = [{key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()}
            for row in rows]
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]) if flat else ["provider"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    sys.stdout.write(buffer.getvalue())


@app.command()
def offers(
    gpu: GpuOpt = None, min_gpu_memory: MinMemOpt = None, gpus_per_node: PerNodeOpt = None,
    provider: ProviderOpt = None, region: RegionOpt = None, geo: GeoOpt = None, pricing: PricingOpt = None,
    max_price: MaxPriceOpt = None, currency: CurrencyOpt = "USD", fx: FxOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show (0 = all).")] = 50,
    max_age: MaxAgeOpt = None, output: FormatOpt = OutputFormat.table,
) -> None:
    """List current offers, cheapest per GPU-hour first, with each offer's age."""
    if limit < 0:
        raise UserError("--limit", f"must be >= 0, got {limit}", "use 0 for all rows")
    query, fx_table, reader = _build_query(gpu, min_gpu_memory, gpus_per_node, provider, region, geo, pricing,
                                           max_price, currency, fx)
    from pricing.query import age_of, age_text, offer_row

    found = _fresh(reader.offers(query, fx_table), max_age)
    found.sort(key=lambda offer: (offer.price_per_gpu_hour_in(query.currency, fx_table), offer.key))
    shown = found[:limit] if limit else found
    stale = reader.stale_reasons(shown)
    if output is not OutputFormat.table:
        _emit_rows([{**offer_row(offer, query.currency, fx_table), "stale": offer.key in stale} for offer in shown],
                   output)
        return
    if not found:
        stderr.print("No offers match these filters.")
        return
    columns = [("Provider", "left"), ("Region", "left"), ("Instance", "left"), ("GPU", "left"), ("GPUs", "right"),
               ("Mem/GPU", "right"), ("Pricing", "left"), ("Node/h", "right"), ("GPU/h", "right"), ("Avail", "right"),
               ("Min term", "right"), ("Age", "right")]
    rows = [([offer.provider, offer.region, offer.instance_type, offer.gpu, str(offer.gpu_count),
              f"{offer.gpu_memory_gb:g} GB", offer.pricing.value, _money(offer.price_per_hour_in(query.currency, fx_table), query.currency),
              _money(offer.price_per_gpu_hour_in(query.currency, fx_table), query.currency, 3),
              "?" if offer.available_nodes is None else str(offer.available_nodes),
              _hours_text(offer.min_term_hours), age_text(age_of(offer)) + (" stale" if offer.key in stale else "")],
             "yellow" if offer.key in stale else None) for offer in shown]
    title = f"{len(found):,} offers" + (f" (cheapest {len(shown)})" if len(shown) < len(found) else "")
    _print_table(title, columns, rows, drop_first=["Mem/GPU", "Node/h", "Min term", "Avail"])
    for error in sorted(set(stale.values())):
        stderr.print(f"[yellow]stale: {error}[/yellow]")


def _fresh(found: list, max_age: Optional[str]) -> list:
    """``--max-age``: offers no older than it (a note says how many were left out)."""
    from pricing.query import parse_max_age, within_max_age

    if max_age is None:
        return found
    fresh, older = within_max_age(found, parse_max_age(max_age))
    if older:
        stderr.print(f"[dim]{older:,} offers older than {max_age} left out (run `gpu-supply refresh`)[/dim]")
    return fresh



@app.command()
def compare(
    gpu: GpuOpt = None,
    gpus: Annotated[int, typer.Option("--gpus", help="How many GPUs you need.")] = 8,
    hours: Annotated[Optional[float], typer.Option("--hours", help="For how long (default 720).")] = None,
    months: Annotated[Optional[float], typer.Option("--months", help="For how long, in 730-hour months.")] = None,
    min_gpu_memory: MinMemOpt = None, gpus_per_node: PerNodeOpt = None, provider: ProviderOpt = None,
    region: RegionOpt = None, geo: GeoOpt = None, pricing: PricingOpt = None, max_price: MaxPriceOpt = None,
    currency: CurrencyOpt = "USD", fx: FxOpt = None, max_age: MaxAgeOpt = None, output: FormatOpt = OutputFormat.table,
) -> None:
    """Cheapest way to get N GPUs for a duration, per provider x pricing model, with the winner's saving."""
    from pricing.comparison import compare as run_compare
    from pricing.comparison import hours_for

    if gpus < 1:
        raise UserError("--gpus", f"must be at least 1, got {gpus}", "e.g. --gpus 8")
    duration = hours_for(hours, months)
    if not _split(gpu) and min_gpu_memory is None:
        raise UserError("--gpu", "say which GPU to compare", "e.g. --gpu H100 (or --min-gpu-memory 80 for any)")
    query, fx_table, reader = _build_query(gpu, min_gpu_memory, gpus_per_node, provider, region, geo, pricing,
                                           max_price, currency, fx)
    result = run_compare(_fresh(reader.offers(query, fx_table), max_age), gpus, duration, query.currency, fx_table)
    if not result.options:
        raise UserError("--gpu", "no offers match these filters", "widen --gpu/--region/--geo/--pricing")
    rows = result.rows()
    if output is not OutputFormat.table:
        _emit_rows(rows, output)
    else:
        _print_compare(result, rows, fx_table)
    if result.winner is None:
        raise typer.Exit(1)


def _print_compare(result, rows: list[dict], fx_table) -> None:
    currency = result.currency
    duration = _hours_text(result.hours) + (f" ({result.hours:g} h)" if result.hours % 730 == 0 else "")
    title = f"{result.gpus} x {rows[0]['gpu'] or 'GPU'} for {duration}, prices in {currency}"
    columns = [("#", "right"), ("Provider", "left"), ("Pricing", "left"), ("Region", "left"), ("Instance", "left"),
               ("Nodes", "right"), ("GPUs", "right"), ("GPU/h", "right"), ("Total", "right"), ("Winner saves", "right")]
    lines = []
    for rank, row in enumerate(rows, start=1):
        if not row["feasible"]:
            lines.append((["-", row["provider"], row["pricing"], row["region"] or "-", row["instance_type"] or "-",
                           str(row["nodes"]), str(row["gpus"]), "-", "-", f"short: max {row['max_gpus']} GPUs"], "dim"))
            continue
        region = row["region"] + (f" +{len(row['regions']) - 1}" if len(row["regions"]) > 1 else "")
        instance = row["instance_type"] + (" +mix" if len(row["allocations"]) > 1 else "")
        saves = "winner" if row["winner"] else (
            f"{_money(row['winner_saving'], currency, 0)} ({row['winner_saving_pct']:g}%)")
        lines.append(([str(rank), row["provider"], row["pricing"], region, instance, str(row["nodes"]),
                       str(row["gpus"]), _money(row["price_per_gpu_hour"], currency, 3),
                       _money(row["total_cost"], currency, 0), saves], "bold green" if row["winner"] else None))
    _print_table(title, columns, lines, drop_first=["#", "GPUs", "Nodes"])
    notes = []
    if any(row["pricing"] == "spot" for row in rows):
        notes.append("spot capacity can be reclaimed at short notice")
    if any(row["billed_hours"] > result.hours for row in rows if row["feasible"]):
        notes.append("minimum terms are charged in full")
    if any(row["gpus"] > result.gpus for row in rows if row["feasible"]):
        notes.append("whole nodes are billed")
    currencies = {a["native_currency"] for row in rows for a in row["allocations"]} - {currency}
    if currencies:
        notes.append(f"converted from {', '.join(sorted(currencies))} at FX of {fx_table.as_of}")
    if notes:
        stdout.print("Note: " + "; ".join(notes) + ".", style="dim")


class PlanFormat(StrEnum):
    table = "table"
    json = "json"


@app.command("plan")
def plan_command(
    workloads: Annotated[Path, typer.Argument(help="Workload spec YAML (docs/workloads.md).")],
    offers_csv: Annotated[Optional[Path], typer.Option("--offers", help="Plan against this offers CSV instead of the store.")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver time limit, seconds.")] = 30.0,
    solver: Annotated[str, typer.Option("--solver", help="highs (default), scip or cpsat.")] = "highs",
    unknown_capacity: Annotated[Optional[int], typer.Option("--unknown-capacity", help="Nodes to assume per offer whose capacity is unknown (default: unlimited).")] = None,
    profiles: Annotated[Optional[Path], typer.Option("--profiles", help="Measured throughput profile CSV.")] = None,
    currency: CurrencyOpt = "USD", fx: FxOpt = None,
    output: Annotated[PlanFormat, typer.Option("--format", help="table or json.")] = PlanFormat.table,
) -> None:
    """Place workloads on the cheapest feasible offers (OR-Tools), by priority when supply is short."""
    result = _make_plan(workloads, offers_csv, time_limit, solver, unknown_capacity, profiles, currency, fx).plan
    if output is PlanFormat.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return
    _print_plan(result)


@dataclass
class _Planned:
    """A plan with what made it, so a run can re-plan part of it on what supply remains."""

    fleet: list
    supply: list
    options: object
    fx: object
    profiles: list | None
    plan: object

    def replan(self, workload, replicas: int, gpus_per_replica: int, exclude: set) -> list:
        """Placements for ``replicas`` more replicas of ``workload``, on supply outside ``exclude``
        ((provider, region, instance type, pricing) of offers lost)."""
        from scheduler.optimizer import plan
        from scheduler.workloads import Demand

        supply = [o for o in self.supply if (o.provider, o.region, o.instance_type, o.pricing) not in exclude]
        demand = Demand(replicas=replicas, gpus_per_replica=gpus_per_replica)
        result = plan([workload.model_copy(update={"demand": demand})], supply, options=self.options, fx=self.fx,
                      profiles=self.profiles)
        return list(result.placements)


def _make_plan(workloads: Path, offers_csv: Path | None, time_limit: float, solver: str,
               unknown_capacity: int | None, profiles: Path | None, currency: str, fx: Path | None) -> _Planned:
    from pricing.fx import load_fx
    from scheduler.optimizer import PlanOptions, plan
    from scheduler.throughput import DEFAULT_PROFILES, load_profiles
    from scheduler.workloads import load_workloads

    if time_limit <= 0:
        raise UserError("--time-limit", f"must be positive, got {time_limit:g}", "e.g. --time-limit 30")
    if unknown_capacity is not None and unknown_capacity < 0:
        raise UserError("--unknown-capacity", f"must be >= 0, got {unknown_capacity}", "e.g. --unknown-capacity 16")
    fleet = load_workloads(workloads)
    fx_table = load_fx(fx, settings.load_config())
    fx_table.rate(currency.upper())
    if offers_csv is not None:
        from pricing.offers_csv import read_offers_csv

        supply = read_offers_csv(offers_csv)
    else:
        from pricing.query import OfferQuery, OfferReader

        supply = OfferReader(settings.database_url()).offers(OfferQuery(), fx_table)
    paths = [profiles] if profiles else [path for path in (DEFAULT_PROFILES, settings.profiles_path()) if path.exists()]
    profile_rows = [row for path in paths for row in load_profiles(path)] or None
    options = PlanOptions(time_limit_s=time_limit, solver=solver.lower(), unknown_capacity=unknown_capacity,
                          currency=currency.upper())
    result = plan(fleet, supply, options=options, fx=fx_table, profiles=profile_rows)
    return _Planned(fleet, supply, options, fx_table, profile_rows, result)


def _print_plan(result) -> None:
    currency = result.currency
    columns = [("Workload", "left"), ("Provider", "left"), ("Region", "left"), ("Instance", "left"), ("GPU", "left"),
               ("Pricing", "left"), ("Nodes", "right"), ("Replicas", "right"), ("TP", "right"), ("Tok/s", "right"),
               ("Per hour", "right"), ("Total", "right")]
    rows = [([p.workload, p.provider, p.region, p.instance_type, p.gpu, p.pricing + (" (held)" if p.committed else ""),
              str(p.nodes), str(p.replicas), str(p.tensor_parallel),
              "-" if p.tokens_per_s is None else f"{p.tokens_per_s:,.0f}", _money(p.cost_per_hour, currency),
              _money(p.total_cost, currency, 0)], None) for p in result.placements]
    _print_table(f"Plan: {len(result.placements)} placements, {_money(result.total_cost_per_hour, currency)}/h, "
                 f"{_money(result.total_cost, currency, 0)} in total", columns, rows,
                 drop_first=["TP", "Replicas", "GPU", "Per hour"])
    if result.unmet:
        unmet_rows = [([u.workload, f"{u.missing_tokens_per_s:,.0f} tok/s" if u.missing_tokens_per_s is not None
                        else f"{u.missing_replicas:g} replicas", u.reason], "red") for u in result.unmet]
        _print_table("Unmet demand", [("Workload", "left"), ("Missing", "right"), ("Why", "left")], unmet_rows, [])
    for explanation in result.explanations:
        line = f"[bold]{explanation.workload}[/bold]: " + ("; ".join(explanation.chosen) or "nothing placed")
        if explanation.cheapest_rejected:
            line += f". Cheapest rejected: {explanation.cheapest_rejected} ({explanation.rejected_because})"
        saving = explanation.saving_vs_single_type
        if saving is not None:
            line += (f". Versus the best single-GPU-type plan ({explanation.single_type_gpu}, "
                     f"{_money(explanation.single_type_cost, currency, 0)}): " +
                     (f"saves {_money(saving, currency, 0)}" if saving >= 0 else
                      f"costs {_money(-saving, currency, 0)} more (that plan assumes the capacity other "
                      f"workloads hold, or the fleet's solve stopped within its gap)"))
        stdout.print(line + ".", highlight=False)
    report = result.solver
    lp_bound = ("no LP bound" if report.lp_bound is None else f"LP bound {report.lp_bound}"
                + ("" if report.lp_exact else " (proven, below the LP's value)"))
    stdout.print(f"Solver {report.solver}: {report.status}, objective {report.objective}, "
                 f"bound {'-' if report.bound is None else report.bound}, "
                 f"gap {'-' if report.gap is None else f'{report.gap:.3%}'}, {lp_bound}, "
                 f"{report.columns} columns, {report.seconds:.2f} s, stages {' > '.join(report.stages)}",
                 style="dim", highlight=False)


@app.command("refresh")
def refresh_command(
    provider: ProviderOpt = None, region: RegionOpt = None,
    idc: Annotated[Optional[list[str]], typer.Option("--idc", help="IDC feed: a file, a directory or an http(s) URL; repeatable (also [idc] feeds in the config).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Regions fetched at once per provider.")] = 8,
    output: Annotated[PlanFormat, typer.Option("--format", help="table or json.")] = PlanFormat.table,
) -> None:
    """Fetch live offers into the store. A region that fails keeps its last good offers, marked stale;
    the exit code is 1 when any region failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pricing.store import open_store
    from providers import build_adapters
    from providers.refresh import refresh

    if concurrency < 1:
        raise UserError("--concurrency", f"must be at least 1, got {concurrency}", "e.g. --concurrency 8")
    adapters = build_adapters(_split(provider), settings.load_config(), _split(idc))
    store = open_store(settings.database_url())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=stderr,
                  transient=True, disable=output is not PlanFormat.table) as progress:
        tasks: dict[str, int] = {}

        def advance(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"refresh {name}", total=total)
            progress.update(tasks[name], completed=done)

        report = refresh(adapters, store, regions=_split(region) or None, concurrency=concurrency,
                         on_progress=advance)
    if output is PlanFormat.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_refresh(report)
    if report.failed:
        raise typer.Exit(1)


def _print_refresh(report) -> None:
    for name, why in report.skipped.items():
        stderr.print(f"{name}: skipped: {why}")
    for name, raw in report.unknown_gpus.items():
        stderr.print(f"[yellow]{name}: GPU names not in the registry, kept as written: {', '.join(raw)}[/yellow]")
    if not report.regions:
        return
    columns = [("Provider", "left"), ("Region", "left"), ("Offers", "right"), ("New", "right"), ("Changed", "right"),
               ("Removed", "right"), ("Tries", "right"), ("Status", "left")]
    rows = [([row.provider, row.region, str(row.offers), str(row.new), str(row.changed), str(row.removed),
              str(row.attempts), f"stale: {row.error}" if row.error else
              f"ok; {len(row.malformed)} malformed row(s) skipped, last prices kept" if row.malformed
              else "ok"], "yellow" if row.error or row.malformed else None)
            for row in report.regions]
    failed = sum(1 for row in report.regions if row.error)
    title = f"Refreshed {len(report.regions) - failed} of {len(report.regions)} regions"
    _print_table(title, columns, rows, drop_first=["Tries", "Removed", "Changed", "New"])


@app.command("run")
def run_command(
    workloads: Annotated[Path, typer.Argument(help="Workload spec YAML with jobs (docs/workloads.md).")],
    offers_csv: Annotated[Optional[Path], typer.Option("--offers", help="Plan against this offers CSV instead of the store.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Start a local multi-node Ray cluster standing in for the plan's nodes.")] = False,
    address: Annotated[Optional[str], typer.Option("--address", help="Use this Ray cluster (HEAD:6379 or ray://...).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver time limit, seconds.")] = 30.0,
    serve_for: Annotated[Optional[float], typer.Option("--serve-for", help="Serve jobs: stop after this many seconds (default: --local serves until Ctrl-C, --address leaves them serving).")] = None,
    http_port: Annotated[int, typer.Option("--http-port", help="Serve jobs: the HTTP port of their endpoints.")] = 8000,
    output: Annotated[PlanFormat, typer.Option("--format", help="table or json.")] = PlanFormat.table,
) -> None:
    """Plan, then run each workload's job on its placements' nodes (Ray): batch jobs to completion,
    then serve jobs behind HTTP endpoints. Re-running an unchanged plan resumes or reports the run it
    already has; it never launches twice."""
    if local == (address is not None):
        raise UserError("--local/--address", "give exactly one", "--local for a laptop stand-in, --address for a cluster")
    if serve_for is not None and serve_for < 0:
        raise UserError("--serve-for", f"{serve_for:g} is negative", "give seconds, e.g. --serve-for 60")
    if not 1 <= http_port <= 65535:
        raise UserError("--http-port", f"{http_port} is not a port", "e.g. --http-port 8000")
    planned = _make_plan(workloads, offers_csv, time_limit, "highs", None, None, "USD", None)
    jobs_fleet = sorted((w for w in planned.fleet if w.job is not None), key=lambda w: -w.priority)
    if not jobs_fleet:
        raise UserError("job", f"no workload in {workloads} has a job", "add job: {kind: batch, ...} (docs/workloads.md)")
    from scheduler.runs import run_plan

    report = run_plan(planned, jobs_fleet, workloads.parent, local=local, address=address,
                      console=stderr if output is PlanFormat.table else None, serve_for=serve_for,
                      http_port=http_port)
    if output is PlanFormat.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_runs(report)
    if report.failed:
        raise typer.Exit(1)


def _print_runs(report) -> None:
    columns = [("Workload", "left"), ("Slot", "right"), ("Try", "right"), ("Provider", "left"), ("Region", "left"),
               ("Offer", "left"), ("Market", "left"), ("Node", "left"), ("State", "left"), ("Cost so far", "right")]
    styles = {"failed": "red", "preempted": "yellow"}
    rows = [([r["workload"], str(r["slot"]), str(r["attempt"]), r["provider"], r["region"], r["instance_type"],
              r["market"], (r["node_id"] or "-")[:8], r["state"], f"${r['cost_so_far']:.6f}"], styles.get(r["state"]))
            for r in report.replica_rows()]
    _print_table(f"Run {report.revision}: what ran where", columns, rows, drop_first=["Try", "Region", "Node"])
    for run in report.runs:
        batch = run.batch
        line = f"[bold]{run.workload}[/bold] ({run.kind}): {run.state}"
        if batch is not None:
            line += (f", {batch.answered} answered" + (f", {batch.already_done} already done" if batch.already_done
                                                         else "") + f" of {batch.items}")
            if batch.lost_replicas:
                line += f"; {batch.lost_replicas} replica(s) lost and replaced"
            line += (f"; re-planned {batch.replans}x" if batch.replans else "") + f"; {batch.seconds:.1f} s"
        else:
            line += (f" at {run.endpoint}" if run.endpoint else "") + (f"; re-planned {run.replans}x" if run.replans
                                                                      else "")
        line += f"; ${run.cost:.6f}" + (f"; output {run.output}" if run.output else "")
        if run.error:
            line += f"; [red]{run.error}[/red]"
        stdout.print(line)


@app.command("profile")
def profile_command(
    model: Annotated[Optional[str], typer.Option("--model", help="A model by name (e.g. llama-3-8b; see docs/ray.md).")] = None,
    params_b: Annotated[Optional[float], typer.Option("--params-b", help="Or a Llama-shaped model of this many billion parameters.")] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="The GPU to measure (with --address: run on a node labelled with it).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="bf16, fp16 or fp32.")] = "bf16",
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")] = "1,8,32",
    input_tokens: Annotated[str, typer.Option("--input-tokens", help="Prompt lengths, comma-separated.")] = "512",
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="Tokens generated per measurement.")] = 128,
    engine_name: Annotated[str, typer.Option("--engine", help="auto (the jobs' engine: vllm where installed on a GPU, else static), static, vllm, or eager (transformers generate, for comparison).")] = "auto",
    device: Annotated[Optional[str], typer.Option("--device", help="Force a torch device (e.g. cpu); default: the GPU.")] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Run as a Ray task on this cluster (HEAD:6379 or ray://...).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Profile table to append to (default: the one plan reads, $GPU_SUPPLY_PROFILES).")] = None,
    output: FormatOpt = OutputFormat.table,
) -> None:
    """Measure prefill and decode speed of a random-weight model on a GPU and append the rows to the
    profile table the optimizer reads. Runs here, or with --address as a Ray task on a node with that GPU."""
    from scheduler import profiler
    from scheduler.engine import model_arch

    if (model is None) == (params_b is None):
        raise UserError("--model/--params-b", "give exactly one", "e.g. --model llama-3-8b or --params-b 8")
    request = profiler.ProfileRequest(model_arch(model, params_b), gpu, dtype, profiler.ints(batch, "batch"),
                                      profiler.ints(input_tokens, "input-tokens"), output_tokens, engine_name, device)
    table = out or settings.profiles_path()
    rows = []
    if output is OutputFormat.table:
        stderr.print(f"{request.arch.name} ({request.arch.params_b:.2f}B) {dtype}, engine {engine_name}"
                     + (f", as a Ray task on {address}" if address else ""))
        stdout.print(profiler.header_line(), highlight=False)
    for node, row in _profile_rows(request, address):
        rows.append(row)
        if output is OutputFormat.table:
            stdout.print(profiler.row_line(row) + (f"  node {node[:8]}" if node else ""), highlight=False)
    if output is not OutputFormat.table:
        _emit_rows(rows, output)
    profiler.append_profiles(table, rows)
    stderr.print(f"appended {len(rows)} row(s) to {table}")


def _profile_rows(request, address: str | None):
    """(node, row) pairs: measured in this process, or by a Ray task on the cluster at ``address``."""
    from scheduler import profiler

    if address is None:
        for row in profiler.profile(request):
            yield None, row
        return
    import ray

    ray.init(address=address, logging_level="warning", log_to_driver=False, configure_logging=False)
    try:
        yield from profiler.profile_on_cluster(request)
    finally:
        ray.shutdown()


@app.command("ray-config")
def ray_config_command(
    plan_file: Annotated[Path, typer.Argument(help="A plan from `gpu-supply plan --format json`.")],
    provider: Annotated[str, typer.Option("--provider", help="aws, gcp or azure.")],
    region: Annotated[Optional[str], typer.Option("--region", help="The region (needed when the plan uses several).")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="GPU image: AMI id, GCP image, or Azure publisher:offer:sku:version.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="GCP project id.")] = None,
    resource_group: Annotated[str, typer.Option("--resource-group", help="Azure resource group.")] = "gpu-supply",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a Ray cluster-launcher config whose worker types are exactly the plan's offers at one supplier."""
    import yaml

    from scheduler.ray_config import launcher_config

    try:
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("PLAN", f"{plan_file} does not exist", "write one with `gpu-supply plan W.yaml --format json`") from None
    except json.JSONDecodeError as exc:
        raise UserError("PLAN", f"{plan_file} is not JSON ({exc.msg}, line {exc.lineno})",
                        "use the output of `gpu-supply plan --format json`") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("placements"), list):
        raise UserError("PLAN", f"{plan_file} has no 'placements' list", "use the output of `gpu-supply plan --format json`")
    config = launcher_config(plan, provider, region=region, image=image, project=project, resource_group=resource_group)
    text = "# Ray cluster-launcher config written by `gpu-supply ray-config` from " + plan_file.name + "\n" + \
        yaml.safe_dump(config, sort_keys=False)
    if output is None:
        print(text, end="")
        return
    partial = output.with_name(output.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(output)  # all or nothing
    stderr.print(f"wrote {output} ({len(config['available_node_types']) - 1} worker types, "
                 f"{config['max_workers']} nodes)")


@app.command("gpus")
def list_gpus(output: FormatOpt = OutputFormat.table) -> None:
    """The GPU registry: canonical names, specs and the aliases suppliers use."""
    rows = [{"gpu": spec.name, "vendor": spec.vendor, "memory_gb": spec.memory_gb,
             "bandwidth_tbps": spec.bandwidth_tbps, "bf16_tflops": spec.bf16_tflops, "form_factor": spec.form_factor,
             "aliases": list(spec.aliases)} for spec in map(gpu_registry.spec, gpu_registry.known_names())]
    if output is not OutputFormat.table:
        _emit_rows(rows, output)
        return
    table = Table(title="GPU registry", title_justify="left")
    for name in ("GPU", "Vendor", "Memory", "HBM TB/s", "BF16 TFLOPS", "Form", "Aliases"):
        table.add_column(name)
    for row in rows:
        table.add_row(row["gpu"], row["vendor"], f"{row['memory_gb']:g} GB", f"{row['bandwidth_tbps']:g}",
                      f"{row['bf16_tflops']:g}", row["form_factor"], ", ".join(row["aliases"]))
    stdout.print(table)


@catalog_app.command("import-skypilot")
def import_skypilot(
    directory: Annotated[Path, typer.Argument(help="SkyPilot catalog root holding <cloud>/vms.csv, e.g. ~/.sky/catalogs/v8")],
    cloud: Annotated[Optional[list[str]], typer.Option("--cloud", help="Clouds to import (default: all found).")] = None,
    observed: Annotated[Optional[str], typer.Option("--observed", help="Date the catalog was fetched (default: file time).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and report, write nothing.")] = False,
) -> None:
    """Import SkyPilot-format catalogs into the store, reporting every row read, composed, fixed or skipped."""
    from rich.progress import Progress

    from pricing.skypilot import catalog_files, import_catalog_file

    clouds = [name.lower() for name in _split(cloud)] or None
    files = catalog_files(directory.expanduser(), clouds)
    all_offers, reports = [], []
    with Progress(console=stderr, transient=True) as progress:
        task = progress.add_task("Reading catalogs", total=len(files))
        for name, path in files:
            progress.update(task, description=f"Reading {name}/{path.name}")
            when = _parse_date(observed, "--observed") if observed else datetime.fromtimestamp(
                path.stat().st_mtime, timezone.utc)
            offers_read, report = import_catalog_file(path, name, when)
            all_offers.extend(offers_read)
            reports.append(report)
            progress.advance(task)
    for report in reports:
        stdout.print("\n".join(report.summary_lines()), highlight=False)
    if dry_run:
        stdout.print(f"Dry run: {len(all_offers):,} offers read, nothing written.")
        return
    _store_import(all_offers, f"skypilot:{directory}", "skypilot-catalog",
                  {"reports": [report.as_dict() for report in reports]})


@catalog_app.command("import-idc")
def import_idc(paths: Annotated[list[Path], typer.Argument(help="IDC offer files (YAML/CSV) or directories.")]) -> None:
    """Import IDC term offers (docs/idc-format.md) into the store."""
    from providers.idc import read_idc_files

    found = read_idc_files(paths)
    _store_import(found, "idc:" + ",".join(str(path) for path in paths), "idc", {"files": [str(p) for p in paths]})


def _store_import(found, source: str, kind: str, report: dict) -> None:
    from pricing.store import open_store

    summary = open_store(settings.database_url()).import_offers(found, source, kind, report)
    stdout.print(f"Imported {summary.offers:,} offers: {summary.new:,} new, {summary.changed:,} changed, "
                 f"{summary.unchanged:,} unchanged, {summary.withdrawn:,} withdrawn.")


def _parse_date(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(field, f"{text!r} is not a date", "write YYYY-MM-DD") from None
    return as_utc(moment)


@catalog_app.command("info")
def catalog_info(output: FormatOpt = OutputFormat.table) -> None:
    """What the store holds: offers per provider (regions, GPU types, pricing models) and the import log."""
    from pricing.fx import FxTable
    from pricing.query import OfferQuery, OfferReader

    reader = OfferReader(settings.database_url())
    current = reader.offers(OfferQuery(), FxTable())
    by_provider: dict[str, dict] = {}
    for offer in current:
        entry = by_provider.setdefault(offer.provider, {"provider": offer.provider, "offers": 0, "regions": set(),
                                                        "gpus": set(), "pricing": set(), "newest": offer.observed_at})
        entry["offers"] += 1
        entry["regions"].add(offer.region)
        entry["gpus"].add(offer.gpu)
        entry["pricing"].add(offer.pricing.value)
        entry["newest"] = max(entry["newest"], offer.observed_at)
    rows = [{"provider": e["provider"], "offers": e["offers"], "regions": len(e["regions"]), "gpu_types": len(e["gpus"]),
             "pricing": sorted(e["pricing"]), "newest": e["newest"].date().isoformat()}
            for e in sorted(by_provider.values(), key=lambda e: -e["offers"])]
    imports = reader.imports()
    if output is not OutputFormat.table:
        _emit_rows(rows, output)
        return
    table = Table(title=f"Offer store {settings.database_url()}: {len(current):,} current offers, "
                        f"{sum(r['regions'] for r in rows)} provider-regions, "
                        f"{len({o.gpu for o in current})} GPU types", title_justify="left")
    for name in ("Provider", "Offers", "Regions", "GPU types", "Pricing", "Newest data"):
        table.add_column(name, justify="right" if name in {"Offers", "Regions", "GPU types"} else "left")
    for row in rows:
        table.add_row(row["provider"], f"{row['offers']:,}", str(row["regions"]), str(row["gpu_types"]),
                      ", ".join(row["pricing"]), row["newest"])
    stdout.print(table)
    log = Table(title="Imports (latest 10)", title_justify="left")
    for name in ("Imported at", "Kind", "Source", "Data date", "Offers"):
        log.add_column(name, justify="right" if name == "Offers" else "left")
    for entry in imports[-10:]:
        log.add_row(str(entry["imported_at"])[:19], str(entry["kind"]), str(entry["source"]),
                    str(entry["data_date"] or "-"), f"{entry['offers']:,}")
    stdout.print(log)


def main() -> None:
    """Entry point: every user error becomes one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except UserError as error:
        stderr.print(f"error: {error.line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # typer's (vendored click) usage errors all carry these two
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            stdout.print(context.get_help(), highlight=False)
            sys.exit(0)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        stderr.print(f"error: {error.format_message()}{hint}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
