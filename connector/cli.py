"""The ``connector-pipeline`` command. Thin: parse, call one library function, print.

Exit codes: 0 success; 1 the command ran and found a problem (corruption in
the WAL); 2 bad usage or input (missing directory, bad option); 3 an
unexpected internal error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from pipeline import bench as bench_mod
from pipeline import book as book_mod
from pipeline import fixedpoint as fp
from pipeline import record as rec
from pipeline import wal as wal_mod
from pipeline.errors import PipelineError

EXIT_PROBLEM = 1
EXIT_USAGE = 2
F = TypeVar("F", bound=Callable[..., Any])
DATA_DIR_HELP = "Data directory (default: $CONNECTOR_PIPELINE_DATA_DIR, else ./data)."


def _print_json(data: Any) -> None:
    sys.stdout.write(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    )


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        # Piped or redirected: rich would assume 80 columns and cut table
        # cells (source names) to fit; a file has no width to respect.
        con.width = 200
    return con


def _say(message: str) -> None:
    """Progress for humans, on stderr so ``--json`` output stays clean."""
    click.echo(message, err=True)


def _json_option(what: str = "results") -> Callable[[F], F]:
    """``--json`` (into ``as_json``): data on stdout for other tools."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print the {what} as JSON.")


def _seconds_option(default: float, minimum: float, help: str) -> Callable[[F], F]:
    return click.option(
        "--seconds",
        type=click.FloatRange(min=minimum),
        default=default,
        show_default=True,
        help=help,
    )


def _dir_option(help: str) -> Callable[[F], F]:
    """A benchmark's ``--dir`` (into ``directory``)."""
    return click.option(
        "--dir", "directory", type=click.Path(path_type=Path), default=None, help=help
    )


def _data_dir_option() -> Callable[[F], F]:
    return click.option(
        "--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP
    )


class _Failed(click.ClickException):
    exit_code = EXIT_USAGE


class _Group(click.Group):
    """Turns the project's expected errors into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise _Failed(str(exc)) from exc


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="connector-pipeline")
def main() -> None:
    """Crash-safe market-data connector: venue feeds -> shared-memory rings ->
    order books and a CRC-checked write-ahead log.

    Data directory: --data-dir where a command has it, else
    $CONNECTOR_PIPELINE_DATA_DIR, else ./data.
    """


# ---------------------------------------------------------------------------
# replay


@main.command()
@click.option(
    "--wal",
    "wal_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="WAL directory (e.g. data/market_data_wal).",
)
@click.option(
    "--verify",
    "action",
    flag_value="verify",
    default=True,
    help="Check every frame's CRC and every source's sequence (the default action).",
)
@click.option(
    "--books",
    "action",
    flag_value="books",
    help="Rebuild the L2 books from the WAL alone and print them.",
)
@click.option(
    "--records",
    "action",
    flag_value="records",
    help="Print the records (one JSON object per line).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Zero a torn tail, pad corrupt regions so intact frames stay readable, then verify.",
)
@click.option(
    "--until",
    "until",
    default=None,
    help="Only records received up to this time (ISO 8601, or ns since the epoch).",
)
@click.option("--feed", "feed", default=None, help="Only this feed (its source name in the WAL).")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Levels per side for --books.",
)
@_json_option("report")
def replay(
    wal_dir: Path,
    action: str,
    repair: bool,
    until: str | None,
    feed: str | None,
    depth: int,
    as_json: bool,
) -> None:
    """Read a WAL back from the files alone: verify (and repair) it, rebuild
    the books, or print the records.

    \b
    --verify lists segments, frames and records, the torn tail (bytes of an
    interrupted write at the end, harmless: the writer zeroes it on start),
    every corruption with file and offset, and per source the first and last
    sequence number, gaps (declared by a STATUS/DROP record or not) and
    duplicates. Exit code 1 when corruption is found.
    """
    if not wal_dir.is_dir():
        raise click.UsageError(f"WAL directory {wal_dir} does not exist")
    if not wal_mod.segment_paths(wal_dir):
        from pipeline import paths

        inner = paths.market_wal_dir(wal_dir)
        hint = f"; the WAL of a data dir is in {inner}" if inner.is_dir() else ""
        _say(f"warning: no WAL segments (*.wal) in {wal_dir}{hint}")
    until_ns = _parse_time(until) if until else None
    if action == "verify":
        _replay_verify(wal_dir, repair, as_json)
        return
    if repair:
        wal_mod.repair(wal_dir)
    src = _source_id(wal_dir, feed) if feed else None
    batches = wal_mod.WalReader(wal_dir).records(src=src)
    if action == "records":
        _print_records(batches, until_ns)
        return
    state = book_mod.replay_books(batches, until_ns)
    books = sorted(state.books.values(), key=lambda b: b.inst)
    if as_json:
        out = []
        for b in books:
            bids, asks = b.top(depth)
            out.append(
                {
                    **{k: v for k, v in b.as_dict().items() if k not in ("bids", "asks")},
                    "bids": [list(x) for x in bids],
                    "asks": [list(x) for x in asks],
                }
            )
        _print_json({"books": out, "applied": state.applied})
        return
    con = _console()
    con.print(f"{len(books)} books from {state.records_applied:,} records")
    for b in books:
        bids, asks = b.top(1)
        best = f"{fp.format(bids[0][0])} / {fp.format(asks[0][0])}" if bids and asks else "-"
        con.print(
            f"  inst {b.inst:>6} src {b.src:>3}  {'valid' if b.valid else 'STALE'}  best {best}  last seq {b.last_seq}"
        )


def _replay_verify(wal_dir: Path, repair: bool, as_json: bool) -> None:
    repaired: dict[str, Any] | None = None
    if repair:
        repaired = wal_mod.repair(wal_dir)
    report = _verify_with_progress(wal_dir, show=not as_json)
    if repaired is not None:
        report["repair"] = repaired
    if as_json:
        _print_json(report)
    else:
        _print_verify(report)
    if not report["ok"]:
        sys.exit(EXIT_PROBLEM)


def _parse_time(text: str) -> int:
    if text.isdigit():
        return int(text)
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither ns since the epoch nor an ISO 8601 time", param_hint="--until"
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(
            f"{text!r} has no time zone (add Z or +05:30)", param_hint="--until"
        )
    return int(moment.timestamp() * 1e9)


def _source_id(wal_dir: Path, feed: str) -> int:
    sources = wal_mod.recover(wal_dir).sources
    for src, (name, _last) in sources.items():
        if name == feed:
            return src
    known = ", ".join(name for name, _last in sources.values()) or "none"
    raise click.BadParameter(f"no feed {feed!r} in {wal_dir} (feeds: {known})", param_hint="--feed")


def _print_records(batches: Any, until_ns: int | None) -> None:
    out = sys.stdout
    for batch in batches:
        if until_ns is not None:
            batch = batch[batch["ts_recv"] <= until_ns]
        for item in rec.describe(batch):
            out.write(orjson.dumps(item).decode() + "\n")


def _verify_with_progress(wal_dir: Path, show: bool) -> dict[str, Any]:
    if not (show and sys.stderr.isatty()):
        return wal_mod.verify(wal_dir)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "verifying",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)
        return wal_mod.verify(
            wal_dir, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )


def _print_verify(report: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    status = "[green]OK[/green]" if report["ok"] else "[red]CORRUPT[/red]"
    con.print(
        f"{status}  {report['segments']} segments, {report['frames']:,} frames, "
        f"{report['records']:,} records ({report['records_per_s']:,} records/s)"
    )
    if report["torn_tail_bytes"]:
        con.print(
            f"torn tail: {report['torn_tail_bytes']:,} bytes after the last good frame (zeroed by the writer on start)"
        )
    for c in report["corrupt"]:
        con.print(f"[red]corrupt[/red] {c['file']} offset {c['offset']}: {c['reason']}")
    if report.get("repair"):
        r = report["repair"]
        con.print(
            f"repair: zeroed {r['zeroed_tail_bytes']:,} tail bytes, padded {len(r['padded'])} corrupt regions, "
            f"removed {len(r['removed'])} files, rebuilt {len(r['rebuilt_headers'])} segment headers"
        )
    if report["sources"]:
        table = Table(
            "source", "first seq", "last seq", "records", "gaps", "undeclared", "duplicates"
        )
        for name, s in report["sources"].items():
            table.add_row(
                name,
                str(s["first_seq"]),
                str(s["last_seq"]),
                f"{s['records']:,}",
                str(len(s["gaps"])),
                str(len(s["undeclared_gaps"])),
                str(s["duplicates"]),
            )
        con.print(table)


# ---------------------------------------------------------------------------
# bench


@main.group(cls=_Group)
def bench() -> None:
    """Benchmarks. Each prints its figure beside a baseline measured in the same run, and the ratio."""


@bench.command("ring")
@_seconds_option(1.0, 0.1, "Length of each measured phase.")
@click.option(
    "--batch",
    "batches",
    type=click.Choice(["1", "16", "256"]),
    multiple=True,
    help="Only these batch sizes (default: all).",
)
@_json_option()
def bench_ring(seconds: float, batches: tuple[str, ...], as_json: bool) -> None:
    """Shared-memory ring: producer + 2 gating consumers + 1 reader, each a process.

    \b
    Baseline: a bare two-process shared-memory copy loop (one counter, no
    protocol). Latency: publish -> gating consumer at a paced 10k records/s
    with the adaptive wait, after a 0.2 s warm-up at that rate; at batch 1
    also for bare loops in the same processes (consumers polling one counter
    and yielding the CPU between polls): what this host's scheduler allows.
    """
    sizes = tuple(int(b) for b in batches) or bench_mod.RING_BATCHES
    result = bench_mod.bench_ring(seconds, sizes, progress=_say)
    if as_json:
        _print_json(result)
        return
    from rich.table import Table

    table = Table(
        "batch",
        "records/s",
        "baseline",
        "ratio",
        "p50 µs",
        "p99 µs",
        "bare p50 µs",
        "bare p99 µs",
        "drops",
        title="ring",
    )
    for r in result["results"]:
        table.add_row(
            str(r["batch"]),
            f"{r['records_per_s']:,}",
            f"{r['baseline_records_per_s']:,}",
            f"{r['ratio']:.2f}",
            f"{r['p50_latency_us']}",
            f"{r['p99_latency_us']}",
            "-" if r["baseline_p50_latency_us"] is None else f"{r['baseline_p50_latency_us']}",
            "-" if r["baseline_p99_latency_us"] is None else f"{r['baseline_p99_latency_us']}",
            str(r["drops"]),
        )
    _console().print(table)


@bench.command("wal")
@_dir_option("Where to write (default: the data dir). The baseline writes in the same place.")
@click.option("--keep", is_flag=True, help="Leave the WAL that was written for inspection.")
@_seconds_option(3.0, 0.1, "Write for at most this long.")
@click.option(
    "--mb",
    type=click.FloatRange(min=1),
    default=1024,
    show_default=True,
    help="Write at most this many MB.",
)
@click.option(
    "--fsync",
    type=click.Choice(wal_mod.FSYNC_POLICIES),
    default="interval",
    show_default=True,
    help="Durability policy to measure.",
)
@_json_option()
def bench_wal(
    directory: Path | None, keep: bool, seconds: float, mb: float, fsync: str, as_json: bool
) -> None:
    """WAL append throughput vs. the same bytes written in 1 MiB blocks with one fdatasync."""
    from pipeline.paths import data_dir

    target = directory or data_dir() / "bench"
    result = bench_mod.bench_wal(
        target, seconds=seconds, max_mb=mb, fsync=fsync, keep=keep, progress=_say
    )
    if as_json:
        _print_json(result)
        return
    con = _console()
    con.print(
        f"wal ({result['fsync']}): {result['mb_per_s']:,} MB/s vs baseline {result['baseline_mb_per_s']:,} MB/s "
        f"= ratio {result['ratio']:.2f}; {result['records_per_s']:,} records/s; "
        f"verify {result['verify_records_per_s']:,} records/s"
    )
    if result["dir"]:
        con.print(f"kept: {result['dir']}")


@bench.command("pipeline")
@_seconds_option(5.0, 1, "Length of each run.")
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=10_000,
    show_default=True,
    help="Messages/s of the paced run.",
)
@_dir_option("Where the runs' data dirs go (default: the data dir).")
@_json_option()
def bench_pipeline(seconds: float, rate: float, directory: Path | None, as_json: bool) -> None:
    """The whole runtime: synthetic source at full speed -> ring -> book builder + WAL,
    then again at a paced rate for latency. Reports records/s persisted, drops,
    receive-to-book and receive-to-WAL latency, and CPU per process."""
    from pipeline.paths import data_dir

    result = bench_mod.bench_pipeline(
        seconds, rate, directory or data_dir() / "bench", progress=_say
    )
    if as_json:
        _print_json(result)
        return
    con = _console()
    for label, r in (("full speed", result), (f"paced {rate:,.0f} msg/s", result["paced"])):
        con.print(
            f"{label}: {r['records_per_s']:,} records/s persisted, {r['wal_mb_per_s']} MB/s WAL, drops {r['drops']}, "
            f"book latency p50 {r['p50_book_latency_us']} µs p99 {r['p99_book_latency_us']} µs, "
            f"WAL p99 {r['p99_wal_latency_us']} µs, cpu {r['cpu']}"
        )


@bench.command("decode")
@_seconds_option(2.0, 0.5, "Time per message type.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Frames per decode call.",
)
@_json_option()
def bench_decode(seconds: float, batch: int, as_json: bool) -> None:
    """Venue decoders vs bare orjson.loads of the same messages (same run)."""
    from connector.bench import bench_decode as run_bench

    result = run_bench(seconds, batch, progress=_say)
    if as_json:
        _print_json(result)
        return
    for name, r in result.items():
        if "packets_per_s" in r:
            click.echo(
                f"{name}: {r['packets_per_s']:,} packets/s vs the official client's struct loop "
                f"{r['baseline_packets_per_s']:,} = ratio {r['ratio']:.2f}"
            )
            continue
        click.echo(
            f"{name}: {r['msgs_per_s']:,} msgs/s vs orjson.loads {r['baseline_msgs_per_s']:,} = ratio {r['ratio']:.2f}"
        )


@bench.command("binance")
@_seconds_option(5.0, 1.0, "Measured time of each side.")
@_dir_option("Where the pipeline's temporary data dir goes (default: the system temp dir).")
@_json_option()
def bench_binance(seconds: float, directory: Path | None, as_json: bool) -> None:
    """Binance simulator at full speed -> pipeline -> WAL, beside a plain
    websockets client that only receives and orjson.loads (same run)."""
    from connector.bench import bench_binance as run_bench

    r = run_bench(seconds, directory, progress=_say)
    if as_json:
        _print_json(r)
        return
    click.echo(
        f"binance: {r['msgs_per_s']:,} msgs/s through the pipeline vs plain client "
        f"{r['baseline_msgs_per_s']:,} = ratio {r['ratio']:.2f}; drops {r['drops']}"
    )


@bench.command("instruments")
@_dir_option("Data directory to write the benchmark universe into (default: a temporary one).")
@_json_option()
def bench_instruments(directory: Path | None, as_json: bool) -> None:
    """Instrument store: WAL -> ready indexes for a ~91K-row universe, beside a plain read of the same bytes."""
    import tempfile

    from connector.instruments.bench import bench_instruments as run_bench

    with tempfile.TemporaryDirectory() as tmp:
        r = run_bench(directory or Path(tmp))
    if as_json:
        _print_json(r)
        return
    click.echo(
        f"{r['instruments']:,} instruments: recover {r['recover_s']} s vs read {r['baseline_s']} s "
        f"({r['ratio']}x); token lookup {r['lookup_token_ns']} ns (bare dict.get "
        f"{r['lookup_baseline_dict_get_ns']} ns, batch {r['lookup_token_batch_ns']} ns)"
    )


@main.group("verify-capture", cls=_Group)
def verify_capture() -> None:
    """Run recorded venue traffic through the real decoders, book sync and book builder."""


@verify_capture.command("binance")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--market",
    type=click.Choice(["auto", "spot", "usdm"]),
    default="auto",
    show_default=True,
    help="Spot or USD-M futures sync rules (auto: from the capture).",
)
@_json_option("report")
def verify_capture_binance(files: tuple[Path, ...], market: str, as_json: bool) -> None:
    """Check a Binance capture: every diff event through the sync state machine,
    every bookTicker against the book built from the diffs.

    \b
    FILES are cryptofeed captures (a WS file's .http. companion is read with
    it) or plain `<receive ns> <raw message>` lines, gzip or not. Exit code 1
    when a bookTicker disagrees with the book, an unexplained gap is found,
    or a message cannot be decoded.
    """
    from connector.binance.verify import verify_capture as run_verify

    report = run_verify(list(files), market)
    if as_json:
        _print_json(report)
    else:
        con = _console()
        con.print(
            f"{report['market']}: {report['messages']:,} messages, {report['depth_updates']:,} depth updates, "
            f"{report['snapshots']} snapshots; gaps {report['gaps']} (unexplained {report['unexplained_gaps']}), "
            f"resyncs {report['resyncs']}; bookTickers checked {report['bbo_checked']} "
            f"(mismatches {report['bbo_mismatches']}, between depth events {report['bbo_uncheckable']}); "
            f"decode errors {report['decode_errors']}"
        )
        for line in report["decode_error_samples"] + report["capture_errors"]:
            con.print(f"  {line}")
        for m in report["mismatches"]:
            con.print(f"  mismatch {m}")
    if (
        report["bbo_mismatches"]
        or report["unexplained_gaps"]
        or report["decode_errors"]
        or report["capture_errors"]
    ):
        sys.exit(EXIT_PROBLEM)


# ---------------------------------------------------------------------------
# simulators


@main.group("simulate", cls=_Group)
def simulate() -> None:
    """Loopback venue simulators (127.0.0.1 only) for tests, demos and benchmarks."""


@simulate.command("binance")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--market",
    type=click.Choice(["spot", "usdm"]),
    default=None,
    help="Default spot (replay: detected).",
)
@click.option(
    "--symbols",
    "symbols",
    default=None,
    help="How many symbols (BTCUSDT, ETHUSDT, ... first), or a comma list of names.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Depth events per second per symbol; 0 = as fast as the clients take them.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated books.")
@click.option(
    "--depth-levels",
    type=click.IntRange(min=2),
    default=50,
    show_default=True,
    help="Levels per side.",
)
@click.option(
    "--replay",
    "replay",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Serve a recorded capture instead (cryptofeed or plain lines; repeatable).",
)
@click.option(
    "--replay-speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="1 = recorded pace, 0 = as fast as possible.",
)
@click.option(
    "--faults", default="", help="e.g. drop=0.01,duplicate=0.01,reorder=0.01,malformed=0.001."
)
@click.option("--ping-interval", type=click.FloatRange(min=0.01), default=20.0, show_default=True)
@click.option("--pong-timeout", type=click.FloatRange(min=0.01), default=60.0, show_default=True)
@click.option(
    "--lifetime",
    type=click.FloatRange(min=0.1),
    default=86400.0,
    show_default=True,
    help="Seconds before the server closes a connection.",
)
@click.option(
    "--weight-limit", type=click.IntRange(min=1), default=None, help="REST weight per minute."
)
@click.option("--json", "as_json", is_flag=True, help="Print the URLs as one JSON line.")
def simulate_binance(
    host: str,
    port: int,
    market: str | None,
    symbols: str | None,
    rate: float,
    seed: int,
    depth_levels: int,
    replay: tuple[Path, ...],
    replay_speed: float,
    faults: str,
    ping_interval: float,
    pong_timeout: float,
    lifetime: float,
    weight_limit: int | None,
    as_json: bool,
) -> None:
    """Run a loopback Binance simulator in the foreground.

    REST and WebSocket on one port in Binance's wire format (random-walk
    books, or a replayed capture), with /sim/truth, /sim/stats, /sim/faults
    and /sim/control for tests. Ctrl-C stops it.

    \b
    Exit code 2 when it cannot start (port busy, non-loopback host, bad option).
    """
    import asyncio
    import contextlib

    from connector.sim.binance import BinanceSimulator, serve_until_stopped

    names, count = None, None
    if symbols:
        if symbols.isdigit():
            count = int(symbols)
        else:
            names = [s.strip() for s in symbols.split(",") if s.strip()]
    sim = BinanceSimulator(
        host=host,
        port=port,
        market=market,
        symbols=names,
        n_symbols=count,
        rate=rate,
        seed=seed,
        depth_levels=depth_levels,
        faults=faults,
        ping_interval_s=ping_interval,
        pong_timeout_s=pong_timeout,
        lifetime_s=lifetime,
        weight_limit=weight_limit,
        replay=list(replay) or None,
        replay_speed=replay_speed,
    )

    def ready(sim: BinanceSimulator) -> None:
        info = {
            "market": sim.market,
            "port": sim.port,
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "symbols": sim.symbols,
        }
        if as_json:
            click.echo(orjson.dumps(info).decode())
            return
        first = sim.symbols[0]
        mode = (
            f"replay of {', '.join(map(str, replay))}"
            if replay
            else f"{rate:g} events/s per symbol"
        )
        click.echo(
            f"Binance {sim.market} simulator on {sim.host}:{sim.port} ({len(sim.symbols)} symbols, {mode})"
        )
        click.echo(
            f"  WebSocket: {sim.stream_url([first.lower() + '@depth@100ms'])}  (or /ws/<stream>)"
        )
        click.echo(f"  REST:      {sim.rest_url}{sim.rest_prefix}/depth?symbol={first}&limit=100")
        if not replay:
            click.echo(f"  truth:     {sim.rest_url}/sim/truth?symbol={first}")
        click.echo(f"  stats:     {sim.rest_url}/sim/stats")
        _say("Ctrl-C stops it.")

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop
        asyncio.run(serve_until_stopped(sim, ready))
    stats = sim.stats()
    _say(
        f"stopped: {stats['connections']['total']} connections, {stats['frames_sent']:,} frames sent, "
        f"faults {stats['faults'] or 'none'}"
    )


# ---------------------------------------------------------------------------
# the runtime

DEFAULT_CONFIG = Path("config/default.toml")


def _data_dir(option: Path | None) -> Path:
    from pipeline.paths import data_dir

    return data_dir(option)


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="TOML configuration (feeds, ring, WAL, books).",
)
@_data_dir_option()
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Stop (cleanly) after this many seconds.",
)
@click.option(
    "--foreground",
    is_flag=True,
    help="Stay in this terminal with progress output; Ctrl-C stops cleanly.",
)
def start(
    config_path: Path, data_dir: Path | None, duration: float | None, foreground: bool
) -> None:
    """Start the pipeline: one process per feed, the WAL writer and the book builder.

    \b
    Without --foreground the supervisor runs in the background (logs in
    DATA_DIR/run/pipeline.log); use `status` and `stop`. A crashed process
    is restarted with exponential backoff; Ctrl-C / SIGTERM drains the rings
    into the WAL before exiting. Exit code 2 when it cannot start (bad
    config, data dir not writable, /dev/shm too small, a process failing to
    start); 1 when a child failed, or when it stopped with records its WAL
    writer could not write (a full disk): they stay in shared memory and the
    next `start` on the data dir writes them.
    """
    from pipeline import config as config_mod

    cfg = config_mod.load(config_path, data_dir=data_dir)
    if not cfg.feeds:
        raise click.UsageError(f"{config_path} defines no [[feeds]]")
    if foreground:
        sys.exit(_run_foreground(cfg, config_path, duration))
    _start_background(cfg, config_path, duration)


def _run_foreground(cfg: Any, config_path: Path, duration: float | None) -> int:
    from pipeline import supervisor as sup

    sup.configure_logging()
    last = {"published": 0, "t": 0.0}

    def progress(snap: dict[str, Any]) -> None:
        dt = snap["elapsed_s"] - last["t"]
        rate = (snap["published"] - last["published"]) / dt if dt > 0 else 0.0
        last.update(published=snap["published"], t=snap["elapsed_s"])
        _say(
            f"[{snap['elapsed_s']:7.1f}s] published {snap['published']:,} ({rate:,.0f}/s)  "
            f"persisted {snap['persisted']:,}  in books {snap['book_records']:,}  "
            f"drops {snap['drops']}  restarts {snap['restarts']}"
        )

    supervisor = sup.Supervisor(cfg, config_path=str(config_path), progress=progress)
    try:
        supervisor.start()
    except PipelineError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    _say(
        f"pipeline running (pid {os.getpid()}, data dir {supervisor.data_dir}); Ctrl-C stops it cleanly"
    )
    code = supervisor.run_until_stopped(duration)
    processes = {p.name: p for p in supervisor.final_processes}
    persisted = processes["wal-writer"].counters["records_out"] if "wal-writer" in processes else 0
    drops = sum(r.dropped for r in supervisor.final_rings.values())
    _say(f"stopped ({supervisor.stop_reason}): {persisted:,} records persisted, {drops} dropped")
    if supervisor.unpersisted:
        left = sum(supervisor.unpersisted.values())
        _say(
            f"error: {left:,} records are not in the WAL yet (see the log); they are kept in "
            "shared memory and the next `start` on this data dir writes them to the WAL"
        )
    return code


def _start_background(cfg: Any, config_path: Path, duration: float | None) -> None:
    import subprocess
    import time

    from pipeline import paths, runinfo

    data_dir = cfg.data_dir.resolve()
    run_dir = paths.run_dir(data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "pipeline.log"
    args = [
        sys.executable,
        "-m",
        "connector.cli",
        "start",
        "--foreground",
        "--config",
        str(config_path.resolve()),
        "--data-dir",
        str(data_dir),
    ]
    if duration:
        args += ["--duration", str(duration)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            _say("\n".join(tail))
            raise _Failed(f"the pipeline exited at start (code {proc.returncode}); log: {log_path}")
        info = runinfo.read(data_dir)
        if info is not None and info.pid == proc.pid and _all_ready(info):
            click.echo(f"pipeline started: pid {proc.pid}, data dir {data_dir}")
            click.echo(f"  logs: {log_path}")
            click.echo(
                "  see it: connector-pipeline status | tail | book SYMBOL;  stop it: connector-pipeline stop"
            )
            return
        time.sleep(0.1)
    raise _Failed(f"the pipeline did not become ready within 90 s; log: {log_path}")


def _all_ready(info: Any) -> bool:
    from pipeline.stats import ProcessTable, State

    try:
        table = ProcessTable.attach(info.processes)
    except PipelineError:
        return False
    try:
        return all(p.state == State.READY for p in table.all())
    finally:
        table.close()


@main.command()
@_data_dir_option()
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    help="Seconds to wait for the drain.",
)
def stop(data_dir: Path | None, timeout: float) -> None:
    """Stop the running pipeline cleanly (ingest stops, the rings drain into the WAL).

    Exit code 1 when the run stopped with records it could not write to the
    WAL (a full disk): the next `start` on the data dir writes them.
    """
    from pipeline import paths, runinfo
    from pipeline import supervisor as sup

    root = _data_dir(data_dir)
    pid = sup.stop(root, timeout, progress=_say)
    click.echo(f"stopped pipeline pid {pid}")
    if runinfo.read(root) is not None:  # kept: its rings hold records the WAL could not take
        _say(
            "error: the run stopped with records not in the WAL yet (see "
            f"{paths.run_dir(root) / 'pipeline.log'}); the next `start` on {root} writes them"
        )
        sys.exit(EXIT_PROBLEM)


@main.command()
@_data_dir_option()
@_json_option("report")
def status(data_dir: Path | None, as_json: bool) -> None:
    """Processes (pid, restarts, CPU, memory), rings (tail, drops, consumer lag) and the WAL."""
    from pipeline import status as status_mod

    report = status_mod.collect(_data_dir(data_dir))
    if as_json:
        _print_json(report)
        return
    _console().print(_status_view(report))


def _status_view(report: dict[str, Any], rates: dict[str, float] | None = None) -> Any:
    """The status report as rich renderables; ``rates`` (ring name -> records/s) adds a column."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    if not report["running"]:
        parts.append(Text(f"not running on {report['data_dir']}"))
        if report["unpersisted"]:
            left = ", ".join(f"{feed} {n:,}" for feed, n in report["unpersisted"].items())
            parts.append(
                Text(
                    f"records of the last run not in the WAL yet (kept in shared memory; the next "
                    f"`start` writes them): {left}",
                    style="red",
                )
            )
    else:
        parts.append(
            Text(f"running: run {report['run_id']}, supervisor pid {report['supervisor_pid']}")
        )
        procs = Table("process", "pid", "state", "restarts", "cpu", "rss MB", "in", "out", "errors")
        procs.columns[0].no_wrap = True
        for p in report["processes"]:
            procs.add_row(
                p["name"],
                str(p["pid"]),
                p["state"] if p["alive"] else "[red]dead[/red]",
                str(p["restarts"]),
                f"{p['cpu']:.0%}",
                f"{p['rss_bytes'] / 1e6:.0f}",
                f"{p['counters']['records_in']:,}",
                f"{p['counters']['records_out']:,}",
                f"[red]{p['counters']['errors']:,}[/red]" if p["counters"]["errors"] else "0",
            )
        parts.append(procs)
        consumers = [c["name"] for c in report["rings"][0]["consumers"]] if report["rings"] else []
        rate_cols = ("records/s",) if rates is not None else ()
        rings = Table("ring", "tail", *rate_cols, "drops", *(f"{c} lag" for c in consumers))
        for r in report["rings"]:
            rate = (
                ()
                if rates is None
                else (
                    f"{rates[r['name']]:,.0f}"
                    if r["name"] in rates
                    else "-",  # first refresh: no rate yet
                )
            )
            drops = f"[red]{r['drops']:,}[/red]" if r["drops"] else "0"
            rings.add_row(
                r["name"],
                f"{r['tail']:,}",
                *rate,
                drops,
                *(f"{c['lag']:,}" for c in r["consumers"]),
            )
        parts.append(rings)
    w = report["wal"]
    parts.append(
        Text(
            f"WAL {w['dir']}: {w['segments']} segments, {w['bytes'] / 1e6:,.0f} MB"
            + ("" if w.get("free_bytes") is None else f" ({w['free_bytes'] / 1e9:,.1f} GB free)")
            + "; last seq "
            + (", ".join(f"{src} {seq}" for src, seq in w["last_seq"].items()) or "none"),
            overflow="fold",
        )
    )
    return Group(*parts)


@main.command()
@_data_dir_option()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many refreshes (default: until Ctrl-C).",
)
def monitor(data_dir: Path | None, interval: float, count: int | None) -> None:
    """A live dashboard of the running pipeline: processes, ring rates, drops, consumer lag, WAL.

    Read-only: it attaches to the shared memory like `status` and never slows
    the pipeline. Keeps waiting (and says so) while no pipeline runs.
    """
    import time

    from rich.live import Live

    from pipeline import status as status_mod

    root = _data_dir(data_dir)
    previous: tuple[float, dict[str, int]] | None = None
    shown = 0
    with Live(console=_console(), auto_refresh=False) as live:
        try:
            while count is None or shown < count:
                report = status_mod.collect(root)
                now = time.monotonic()
                tails = {r["name"]: r["tail"] for r in report["rings"]}
                rates: dict[str, float] = {}
                if previous is not None and now > previous[0]:
                    span = now - previous[0]
                    rates = {n: (t - previous[1].get(n, t)) / span for n, t in tails.items()}
                previous = (now, tails)
                live.update(_status_view(report, rates), refresh=True)
                shown += 1
                if count is None or shown < count:
                    time.sleep(interval)  # the refresh period of the dashboard
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--feed", default=None, help="Which feed's ring (needed when the run has several).")
@_data_dir_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Exit after this many records."
)
@click.option(
    "--from-oldest",
    is_flag=True,
    help="Start with the oldest record still in the ring, not the newest.",
)
def tail(
    feed: str | None, data_dir: Path | None, as_json: bool, count: int | None, from_oldest: bool
) -> None:
    """Follow a feed's ring live, from another process, without slowing it down.

    If the reader falls too far behind, the records it missed are counted and
    reported on stderr (never shown out of order). Ends with Ctrl-C, --count,
    or when the pipeline stops.
    """
    import time

    from pipeline import paths, runinfo, shm
    from pipeline import ring as ring_mod

    root = _data_dir(data_dir)
    info = runinfo.require(root)
    chosen = info.feed(feed)
    names = _Names(paths.published_instruments(root, chosen.name))
    reader = ring_mod.Reader(chosen.ring, start="oldest" if from_oldest else "tail")
    shown = 0
    try:
        while count is None or shown < count:
            batch, overrun = reader.wait(timeout_s=0.5, max_records=4096)
            if overrun:
                _say(f"-- {overrun:,} records missed (the reader was lapped)")
            if count is not None:
                batch = batch[: count - shown]
            symbols = names.refresh(time.monotonic())
            for item in rec.describe(batch):
                if item["inst"] in symbols:
                    item["symbol"] = symbols[item["inst"]]
                if as_json:
                    click.echo(orjson.dumps(item).decode())
                else:
                    click.echo(_record_line(item))
            shown += len(batch)
            if not len(batch) and (reader.at_end or not shm.run_is_alive(info.run_id)):
                break  # the feed finished or the pipeline stopped
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _record_line(item: dict[str, Any]) -> str:
    flags = "|".join(item["flags"]) or "-"
    what = f"{item['symbol']} ({item['inst']})" if "symbol" in item else f"inst {item['inst']}"
    head = f"{item['seq']:>10} {item['kind']:<11} {what:<16}"
    if item["kind"] == "BOOK_UPDATE":
        ids = f"{item['first_update_id']}..{item['last_update_id']} (prev {item['prev_update_id']})"
        return f"{head} ids {ids}  {flags}"
    if item["kind"] == "EXTRA":
        return f"{head} {item['px']} {item['qty']} {item['aux']} {item['aux2']}  {flags}"
    if item["kind"] == "STATUS":
        return f"{head} {item['reason']} missing {item['missing']} from {item['first_missing']}  {flags}"
    return f"{head} {item['side']:<4} {item['px']:>14} x {item['qty']:<14} {flags}"


@main.command()
@click.argument("symbol")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Levels per side to show.",
)
@_data_dir_option()
@_json_option("book")
@click.option("--watch", is_flag=True, help="Keep refreshing (Ctrl-C to stop).")
@click.option(
    "--feed", default=None, help="The feed the symbol belongs to, when several feeds have it."
)
def book(
    symbol: str, depth: int, data_dir: Path | None, as_json: bool, watch: bool, feed: str | None
) -> None:
    """Show the live L2 book of SYMBOL from the shared book table: a symbol as a
    feed publishes it, an instrument id, or an instrument store key
    (NSE:INFY, BINANCE-USDM:BTCUSDT)."""
    import time

    from pipeline import book as book_mod
    from pipeline import runinfo

    root = _data_dir(data_dir)
    info = runinfo.require(root)
    inst = _resolve_instrument(root, symbol, feed)
    table = book_mod.BookTable.attach(info.books)
    try:
        if not watch:
            _show_book(table, inst, symbol, depth, as_json)
            return
        try:
            while True:
                if not as_json:
                    click.clear()
                _show_book(table, inst, symbol, depth, as_json)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    finally:
        table.close()


def _resolve_instrument(root: Path, symbol: str, feed: str | None = None) -> int:
    from pipeline import paths

    folder = paths.published_instruments(root)
    published = {  # feed -> {inst: name}, as the run's feeds published them
        path.stem: _published_names(path)
        for path in (sorted(folder.glob("*.json")) if folder.is_dir() else [])
        if feed is None or path.stem == feed
    }
    found = {f: i for f, names in published.items() for i, n in names.items() if n == symbol}
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        raise _Failed(
            f"{symbol} is on several feeds ({', '.join(sorted(found))}): choose one with --feed "
            "(or name it by its instrument store key, e.g. BINANCE-USDM:BTCUSDT)"
        )
    if symbol.isdigit():
        return int(symbol)
    if ":" in symbol:
        inst = _store_instrument(root, symbol)
        if any(inst in names for names in published.values()):
            return inst
        raise _Failed(
            f"{symbol} is instrument {inst} in the store, but no feed of this run publishes it"
        )
    names = sorted({n for feed_names in published.values() for n in feed_names.values()})
    near = _near_names(symbol, names)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise _Failed(
        f"unknown symbol {symbol!r} (not published by any feed of this run; an instrument id "
        f"or an instrument store key like BINANCE-SPOT:BTCUSDT also works){hint}"
    )


def _near_names(symbol: str, names: list[str], most: int = 5) -> list[str]:
    """Published names a mistyped or partial symbol may mean: those containing
    it (``NIFTY`` -> ``NSE:NIFTY 50``), then close spellings."""
    wanted = symbol.upper()
    containing = [n for n in names if wanted in n.upper()]
    containing.sort(key=lambda n: (len(n), n))
    import difflib

    close = difflib.get_close_matches(wanted, names, n=most, cutoff=0.75)
    return list(dict.fromkeys(containing[:most] + close))[:most]


def _published_names(path: Path) -> dict[int, str]:
    """A feed's published ``{inst: symbol}`` (empty if it publishes none)."""
    try:
        return {int(i): n for i, n in orjson.loads(path.read_bytes()).items()}
    except FileNotFoundError:
        return {}


class _Names:
    """A feed's published symbols for ``tail``, read again when the feed
    publishes new ones (the Kite feed does, each morning)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = -1
        self._checked = 0.0
        self.names: dict[int, str] = {}

    def refresh(self, now: float) -> dict[int, str]:
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                mtime_ns = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime_ns = -1
            if mtime_ns != self._mtime_ns:
                self._mtime_ns = mtime_ns
                self.names = _published_names(self.path)
        return self.names


def _store_instrument(root: Path, key: str) -> int:
    """The store's id of ``EXCHANGE:SYMBOL`` (``NSE:INFY``, ``BINANCE-USDM:BTCUSDT``)."""
    from connector.instruments import store
    from connector.instruments.model import InstrumentNotFoundError
    from connector.instruments.universe import Universe
    from pipeline import paths

    snapshot = store.recover(paths.instruments_wal_dir(root)).snapshot
    if snapshot is None:
        raise _Failed(
            f"unknown symbol {key!r}, and {root} has no instrument store to look it up in"
        )
    try:
        return Universe.from_snapshot(snapshot).by_exchange_symbol(key).inst
    except InstrumentNotFoundError as exc:
        raise _Failed(f"unknown symbol {key!r}: {exc}") from None


def _show_book(table: Any, inst: int, symbol: str, depth: int, as_json: bool) -> None:
    snap = table.read(inst)
    if snap is None:
        raise _Failed(
            f"no book for {symbol} (instrument {inst}) yet: its feed has sent no depth for it "
            "(an index, or a token in ltp/quote mode, never has one; `tail` shows its ticks)"
        )
    if as_json:
        d = snap.as_dict()
        d["symbol"] = symbol
        d["bids"] = [[fp.format(p), fp.format(q), o] for p, q, o in snap.bids[:depth]]
        d["asks"] = [[fp.format(p), fp.format(q), o] for p, q, o in snap.asks[:depth]]
        _print_json(d)
        return
    from rich.table import Table

    title = f"{symbol} (inst {inst})  {'valid' if snap.valid else 'STALE: waiting for a snapshot'}  seq {snap.last_seq}"
    t = Table("bid qty", "bid", "ask", "ask qty", title=title)
    for i in range(min(depth, max(len(snap.bids), len(snap.asks)))):
        b = snap.bids[i] if i < len(snap.bids) else None
        a = snap.asks[i] if i < len(snap.asks) else None
        t.add_row(
            fp.format(b[1]) if b else "",
            fp.format(b[0]) if b else "",
            fp.format(a[0]) if a else "",
            fp.format(a[1]) if a else "",
        )
    _console().print(t)


def _register_venue_commands() -> None:
    """Commands that live beside their venue's code (imported here, once)."""
    from connector.instruments.cli import instruments
    from connector.sim.kite_cli import kite
    from connector.zerodha.decode_cli import decode
    from connector.zerodha.login_cli import login

    main.add_command(instruments, "instruments")
    main.add_command(decode, "decode")
    main.add_command(login, "login")
    simulate.add_command(kite, "kite")


_register_venue_commands()

if __name__ == "__main__":
    main()
