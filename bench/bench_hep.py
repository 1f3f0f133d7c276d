"""Benchmark: the HEP source, packets/s on one core with full REGISTER reassembly.

    python bench/bench_hep.py [--packets 200000] [--repeat 3]

Builds a packet corpus from a realistic mix of scenarios (REGISTER/401/200 flows,
rejections, retransmissions, the SBC's OPTIONS pings), encoded as drachtio sends them
(tests/hep_encoding.py), then measures, each stage in its own process pinned to one core:

* **decode**: ``decode_hep`` alone;
* **intake**: decode -> allow-list -> SipMessage (``HepIntake.receive``), no sockets;
* **reassembly**: the same plus ``RegisterTracker.on_message`` for every message: the CPU
  cost per packet of the whole receive path;
* **loopback UDP**: a real ``HepSource`` (non-blocking socket, reader callback, batches)
  feeding the tracker, with a sender process on the other core blasting the corpus at full
  speed, and again paced at 80 % of the measured capacity.  Reports packets processed per
  CPU second of the receiver, the kernel's drops for the socket and the receiver's peak RSS.

It also measures what one queued datagram costs in the socket's receive buffer (the kernel
counts its ``truesize``, not the payload), from which the buffer that absorbs a stall of a
given length follows.  Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hep_scenario import HepScenario  # noqa: E402
from tools.synth import Device, Scenario, busy_round  # noqa: E402


def _answer_options(sc: Scenario, dev: Device, ping: list[str]) -> None:
    sc.recv(dev, dev.response(ping, 200, "OK"))


def corpus(n_packets: int, seed: int = 1) -> list[bytes]:
    """At least ``n_packets`` packets of a realistic SBC feed (one capture agent)."""
    rng = random.Random(seed)
    users = [str(1000 + i) for i in range(2000)]
    packets: list[bytes] = []
    t = 1795766400.0
    while len(packets) < n_packets:
        sc = HepScenario(t)
        busy_round(sc, rng, users, _answer_options)
        packets += sc.packets()
        t = sc.t
    return packets


# ------------------------------------------------------------------ stages (child processes)


def _load(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def stage_offline(path: str, stage: str) -> dict[str, float]:
    from sipwatch.ingest.transactions import RegisterTracker
    from sipwatch.sources.hep.addresses import AddressSet
    from sipwatch.sources.hep.decode import decode_hep
    from sipwatch.sources.hep.intake import HepIntake

    packets = _load(path)
    tracker = RegisterTracker()
    intake = HepIntake(allow=AddressSet(["127.0.0.0/8"]), max_backlog=1 << 30)
    completed = 0
    start = _cpu()
    if stage == "decode":
        for p in packets:
            decode_hep(p)
    else:
        receive = intake.receive
        on_message = tracker.on_message
        for i, p in enumerate(packets):
            receive(p, "127.0.0.1")
            if i % 256 == 255:  # what one reader wake-up hands over
                for batch in intake.take_batches():
                    if stage == "reassembly":
                        for m in batch.messages:
                            completed += len(on_message(m))
        for batch in intake.take_batches():
            if stage == "reassembly":
                for m in batch.messages:
                    completed += len(on_message(m))
    cpu = _cpu() - start
    return {"packets": len(packets), "cpu": cpu, "completed": completed}


def stage_receiver(port: int, expected: int) -> dict[str, float]:
    """A real HepSource feeding the tracker until ``expected`` packets were accounted for
    (processed or dropped) or the feed is quiet for 2 s."""
    import dataclasses

    from sipwatch.config import Config
    from sipwatch.ingest.transactions import RegisterTracker
    from sipwatch.sources.hep.listener import HepSource

    cfg = dataclasses.replace(Config().sources.hep, listen=f"127.0.0.1:{port}")
    source = HepSource(cfg, max_backlog=1 << 30)
    tracker = RegisterTracker()
    result: dict[str, float] = {}

    async def run() -> None:
        agen = source.chunks()
        pending = asyncio.ensure_future(agen.__anext__())
        await source.listening.wait()
        await asyncio.to_thread(Path(os.environ["HEP_BENCH_READY"]).write_text, "ready")
        messages = 0
        started = cpu0 = last = 0.0
        while messages < expected:
            done, _ = await asyncio.wait({pending}, timeout=2.0 if messages else 60.0)
            if not done:
                break  # the sender is done and the rest was lost
            batch = pending.result()
            last = time.perf_counter()
            if not started:
                started, cpu0 = last, _cpu()
            for m in batch.messages:
                tracker.on_message(m)
            messages += len(batch.messages)
            pending = asyncio.ensure_future(agen.__anext__())
        result["wall"] = last - started
        result["cpu"] = _cpu() - cpu0
        result["messages"] = messages
        result["kernel_drops"] = source.stats.kernel_drops() or 0
        result["receive_buffer"] = source.stats.receive_buffer_bytes
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await agen.aclose()

    asyncio.run(run())
    result["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def stage_sender(path: str, port: int, rate: float) -> dict[str, float]:
    packets = _load(path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        send = s.send
        start = time.perf_counter()
        if rate <= 0:
            for p in packets:
                send(p)
        else:
            step = 100  # packets per pacing step
            for i in range(0, len(packets), step):
                ahead = start + i / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
                for p in packets[i : i + step]:
                    send(p)
        return {"wall": time.perf_counter() - start, "sent": len(packets)}


def truesize_per_packet(packets: list[bytes]) -> float:
    """Bytes of receive buffer one queued datagram takes (rx_queue of /proc/net/udp)."""
    from sipwatch.sources.hep.listener import _socket_inode

    sample = packets[:200]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind(("127.0.0.1", 0))
        for p in sample:
            tx.sendto(p, rx.getsockname())
        inode = str(_socket_inode(rx))
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] == inode:
                return int(parts[4].split(":")[1], 16) / len(sample)
    return float("nan")


# ------------------------------------------------------------------ driver


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def child(args: list[str], core: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*pinned(core), sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def result_of(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"stage failed ({proc.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


def loopback(
    path: str, n: int, rate: float, tmp: Path
) -> tuple[dict[str, float], dict[str, float]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = tmp / f"ready-{rate}"
    receiver = child(
        ["--stage", "receiver", "--port", str(port), "--expect", str(n)],
        0,
        {"HEP_BENCH_READY": str(ready)},
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if time.monotonic() > deadline or receiver.poll() is not None:
            raise SystemExit("receiver did not start")
        time.sleep(0.05)
    sender = child(
        ["--stage", "sender", "--port", str(port), "--corpus", path, "--rate", str(rate)], 1
    )
    sent = result_of(sender)
    return result_of(receiver), sent


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.stage in ("decode", "intake", "reassembly"):
        print(json.dumps(stage_offline(args.corpus, args.stage)))
        return
    if args.stage == "receiver":
        print(json.dumps(stage_receiver(args.port, args.expect)))
        return
    if args.stage == "sender":
        print(json.dumps(stage_sender(args.corpus, args.port, args.rate)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="sipwatch-hep-bench-"))
    try:
        t = time.perf_counter()
        packets = corpus(args.packets)
        path = tmp / "corpus.bin"
        with path.open("wb") as f:
            for p in packets:
                f.write(len(p).to_bytes(4, "big") + p)
        n = len(packets)
        size = sum(map(len, packets))
        print(
            f"corpus: {n:,} packets, {size / n:.0f} bytes on average ({time.perf_counter() - t:.1f} s to build)"
        )
        for stage in ("decode", "intake", "reassembly"):
            best = min(
                (
                    result_of(child(["--stage", stage, "--corpus", str(path)], 0))
                    for _ in range(args.repeat)
                ),
                key=lambda r: r["cpu"],
            )
            print(
                f"{stage:<11}: {n / best['cpu']:>9,.0f} packets/s per core  ({best['cpu']:.2f} s CPU)"
            )
        capacity = 0.0
        for label, rate in (("full speed", 0.0), ("paced 80%", -1.0)):
            if rate < 0:
                rate = 0.8 * capacity
            recv, sent = loopback(str(path), n, rate, tmp)
            per_core = recv["messages"] / recv["cpu"] if recv["cpu"] else 0.0
            capacity = capacity or per_core
            lost = n - recv["messages"]
            print(
                f"loopback UDP, {label} (sent {sent['sent'] / sent['wall']:,.0f}/s): "
                f"{per_core:,.0f} packets/s per receiver CPU second, "
                f"{recv['messages'] / recv['wall']:,.0f}/s wall; "
                f"lost {lost:,} ({100 * lost / n:.2f} %, kernel drops {recv['kernel_drops']:,.0f}); "
                f"receive buffer {recv['receive_buffer'] / 2**20:.0f} MiB; peak RSS {recv['rss_kib'] / 1024:.0f} MiB"
            )
        per_packet = truesize_per_packet(packets)
        print(
            f"receive buffer: one queued datagram takes {per_packet:,.0f} bytes; "
            f"a 100 ms stall at {capacity:,.0f} packets/s needs {per_packet * capacity * 0.1 / 2**20:.1f} MiB, "
            f"at 50,000 packets/s {per_packet * 5000 / 2**20:.1f} MiB"
        )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
