"""Venue benchmarks (decoding), each beside its baseline measured in the same run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from connector.binance.batch import BatchDecoder
from connector.binance.wire import Decoder
from pipeline import record as rec

Progress = Callable[[str], None]


def _depth_frames(n: int, rng: random.Random) -> list[bytes]:
    """Spot diff-depth messages like Binance's at 100 ms: 20 bids and 20 asks, 8 decimals (~1.4 KB)."""
    frames = []
    for i in range(n):
        bids = [
            [f"{60000 - j * 0.01 - rng.random():.8f}", f"{rng.random() * 5:.8f}"] for j in range(20)
        ]
        asks = [
            [f"{60000 + j * 0.01 + rng.random():.8f}", f"{rng.random() * 5:.8f}"] for j in range(20)
        ]
        data = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + i,
            "s": "BTCUSDT",
            "U": 10 * i,
            "u": 10 * i + 9,
            "b": bids,
            "a": asks,
        }
        frames.append(orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data}))
    return frames


def _trade_frames(n: int, rng: random.Random) -> list[bytes]:
    frames = []
    for i in range(n):
        data = {
            "e": "trade", "E": 1_700_000_000_000 + i, "s": "BTCUSDT", "t": 5_000_000 + i,
            "p": f"{60000 + rng.random():.8f}", "q": f"{rng.random():.8f}", "T": 1_700_000_000_000 + i,
            "m": bool(i % 2), "M": True,
        }  # fmt: skip
        frames.append(orjson.dumps({"stream": "btcusdt@trade", "data": data}))
    return frames


def _rate(run: Callable[[], object], n: int, seconds: float) -> float:
    """Messages per second of ``run`` (which handles ``n`` messages), best of repeats within ``seconds``."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        run()
        best = max(best, n / (time.perf_counter() - t0))
        if time.perf_counter() >= deadline:
            return best


def bench_decode(
    seconds: float = 2.0, batch: int = 256, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """Decoding throughput against bare ``orjson.loads`` of the same messages.

    Ours is the batch decoder (what the feed runs) over batches of ``batch``
    frames, producing complete records; the baseline only parses the JSON.
    ``speedup`` says whether the C scanner was used; the pure-Python road is
    measured too (``python_*``). Each side alternates in short runs and keeps
    its best (the host drifts).
    """
    rng = random.Random(1)
    decoder = BatchDecoder(Decoder({"BTCUSDT": 1}))
    python = BatchDecoder(Decoder({"BTCUSDT": 1}), speedup=False)
    out: dict[str, Any] = {}
    for name, frames in (
        ("binance_depth", _depth_frames(4096, rng)),
        ("binance_trade", _trade_frames(16384, rng)),
    ):
        progress(
            f"decode {name}: {len(frames)} messages, batches of {batch}, "
            f"C speedup {'on' if decoder.speedup else 'not built: pure Python'}"
        )
        chunks = [frames[i : i + batch] for i in range(0, len(frames), batch)]

        def baseline(frames: list[bytes] = frames) -> None:
            loads = orjson.loads
            for f in frames:
                loads(f)

        def ours(chunks: list[list[bytes]] = chunks, decoder: BatchDecoder = decoder) -> None:
            for chunk in chunks:
                decoder.decode(chunk, 0)

        def pure(chunks: list[list[bytes]] = chunks) -> None:
            for chunk in chunks:
                python.decode(chunk, 0)

        base_rate = ours_rate = pure_rate = 0.0
        for _ in range(3):
            base_rate = max(base_rate, _rate(baseline, len(frames), seconds / 9))
            ours_rate = max(ours_rate, _rate(ours, len(frames), seconds / 9))
            pure_rate = max(pure_rate, _rate(pure, len(frames), seconds / 9))
        out[name] = {
            "msgs_per_s": round(ours_rate),
            "baseline_msgs_per_s": round(base_rate),
            "ratio": round(ours_rate / base_rate, 3),
            "speedup": decoder.speedup,
            "python_msgs_per_s": round(pure_rate),
            "python_ratio": round(pure_rate / base_rate, 3),
            "batch": batch,
            "bytes_per_msg": len(frames[0]),
        }
    from connector.zerodha.bench import bench_kite_decode

    progress("decode kite_full: 184-byte full packets, 200 per frame")
    out["kite_full"] = bench_kite_decode(seconds)
    return out


# -- bench binance: simulator at full speed -> pipeline -> WAL ----------------

_SIM_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
_STREAMS = ["depth@100ms", "trade", "bookTicker"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sim_params(port: int) -> dict[str, Any]:
    # rate 0: the simulator generates as fast as its slowest subscriber takes it.
    return {"port": port, "market": "spot", "symbols": _SIM_SYMBOLS, "rate": 0, "seed": 1}


def _run_sim_process(params: dict[str, Any], ready: Any, stop: Any) -> None:
    """A simulator in its own process (as the supervisor runs it) for the baseline."""
    import asyncio

    from connector.sim.binance import BinanceSimulator

    async def main() -> None:
        sim = BinanceSimulator(**params)
        await sim.start()
        ready.set()
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)  # poll the stop flag
        finally:
            await sim.stop()

    asyncio.run(main())


def _baseline_client(port: int, seconds: float) -> tuple[int, float]:
    """A plain websockets client: receive and ``orjson.loads`` only. (messages, seconds)."""
    import asyncio

    import websockets

    streams = "/".join(f"{s.lower()}@{k}" for s in _SIM_SYMBOLS for k in _STREAMS)

    async def main() -> tuple[int, float]:
        loads = orjson.loads
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/stream?streams={streams}", compression=None, max_size=2**24
        ) as ws:
            await ws.recv()  # the clock starts at the first message, as for the pipeline
            n, t0 = 0, time.perf_counter()
            deadline = t0 + seconds
            while (now := time.perf_counter()) < deadline:
                loads(await ws.recv(decode=False))
                n += 1
            return n, now - t0

    return asyncio.run(main())


def _baseline_binance(seconds: float) -> tuple[int, float]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_run_sim_process, args=(_sim_params(port), ready, stop), daemon=True)
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the Binance simulator did not start within 30 s")
        return _baseline_client(port, seconds)
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _pipeline_binance(seconds: float, parent: Path) -> dict[str, Any]:
    import shutil
    import tempfile

    from pipeline import config as config_mod
    from pipeline import paths
    from pipeline import wal as wal_mod
    from pipeline.record import Flag, Kind
    from pipeline.supervisor import Supervisor

    data_dir = Path(tempfile.mkdtemp(prefix="cp-bench-binance-", dir=parent))
    port = _free_port()
    try:
        config = config_mod.from_dict(
            {
                "ring": {"capacity": 1 << 17},
                "book": {"depth": 20, "max_instruments": 1024},
                "services": [
                    {
                        "name": "sim",
                        "target": "connector.sim.service:binance",
                        "params": _sim_params(port),
                    }
                ],
                "feeds": [
                    {
                        "name": "binance-spot",
                        "adapter": "connector.binance.client:factory",
                        "src": 1,
                        "params": {
                            "market": "spot",
                            "ws_url": f"ws://127.0.0.1:{port}",
                            "rest_url": f"http://127.0.0.1:{port}",
                            "symbols": _SIM_SYMBOLS,
                            "streams": _STREAMS,
                        },
                    }
                ],
            },
            source="<bench binance>",
            data_dir=data_dir,
        )
        sup = Supervisor(config)
        sup.start()
        sup.run_until_stopped(seconds + 2.0)  # + time to connect and sync
        drops = sum(r.dropped for r in sup.final_rings.values())
        records = np.concatenate(
            [b.copy() for b in wal_mod.WalReader(paths.market_wal_dir(data_dir)).records()]
            or [rec.empty(0)]
        )
        data = records[records["kind"] != Kind.STATUS]
        ends = data[(data["flags"] & Flag.LAST) != 0]  # one per wire message
        recv = ends["ts_recv"]
        # Steady state: the messages received in the window of the baseline's
        # length after the first one (connecting and syncing excluded, as there).
        first = int(recv.min()) if len(recv) else 0
        in_window = int(np.count_nonzero(recv < first + int(seconds * 1e9)))
        span = min(seconds, (int(recv.max()) - first) / 1e9) if len(recv) else 0.0
        report = wal_mod.verify(paths.market_wal_dir(data_dir))
        return {
            "msgs": in_window,
            "seconds": span,
            "drops": drops,
            "records": len(records),
            "statuses": int(np.count_nonzero(records["kind"] == Kind.STATUS)),
            "wal_verified": bool(report["ok"]),
        }
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def bench_binance(
    seconds: float = 5.0, directory: Path | None = None, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """Binance simulator at full speed -> pipeline (ingest, ring, book builder, WAL)
    beside a plain websockets client that only receives and parses, same simulator
    settings, same run. Messages are wire messages (one depth update, trade or
    bookTicker each); the pipeline's are counted from the WAL."""
    import tempfile

    parent = directory or Path(tempfile.gettempdir())
    progress(f"binance baseline: plain websockets + orjson.loads for {seconds:g} s")
    base_n, base_s = _baseline_binance(seconds)
    progress(f"binance pipeline: simulator -> feed -> ring -> WAL + books for {seconds:g} s")
    ours = _pipeline_binance(seconds, parent)
    ours_rate = ours["msgs"] / ours["seconds"] if ours["seconds"] else 0.0
    base_rate = base_n / base_s if base_s else 0.0
    return {
        "msgs_per_s": round(ours_rate),
        "baseline_msgs_per_s": round(base_rate),
        "ratio": round(ours_rate / base_rate, 3) if base_rate else 0.0,
        "drops": ours["drops"],
        "records": ours["records"],
        "status_records": ours["statuses"],
        "wal_verified": ours["wal_verified"],
        "seconds": seconds,
    }
