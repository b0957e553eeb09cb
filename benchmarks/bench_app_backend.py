"""Throughput of app_backend's ``GET /`` on loopback: run by hand, not by CI.

Starts ``python -m app_backend`` (v2, access log off unless ``--access-log``) on 127.0.0.1,
warms it up, then loads ``GET /`` with a fixed concurrency and prints one results line::

    app_backend v2 GET / (python client, access log off): 20000 requests, concurrency 50,
    4.1 s -> 4870 req/s, p50 9.8 ms, p99 17.2 ms, errors 0

The load comes from ``wrk`` when it is on PATH (a fixed duration, since wrk cannot stop after a
number of requests), otherwise from a small keep-alive HTTP/1.1 client written on asyncio
streams and run in its own process, so that server and client each get a core on a 2-core
machine. That client speaks just enough HTTP for this server; aiohttp's client would spend
several times more CPU per request and measure itself more than the server.

Everything stops by itself: the load is bounded in requests (or seconds for wrk) and by an
overall deadline, and the server is stopped with SIGTERM (killed if it lingers).

    .venv/bin/python benchmarks/bench_app_backend.py [--requests 20000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"  # never anything else: this benchmark only loads this machine
REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP_REQUESTS = 500
DEADLINE_SECONDS = 300.0


# --- Load generator (runs in its own process) -------------------------------------------------


async def _worker(
    port: int,
    remaining: list[int],
    latencies: list[float],
    errors: list[str],
    expect_prefix: bytes,
) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, _, header_block = head.partition(b"\r\n")
            length = 0
            close = False
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.startswith(b"HTTP/1.1 200") or not body.startswith(expect_prefix):
                errors.append(f"{status_line!r} {body[:40]!r}")
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()


async def _load(port: int, requests: int, concurrency: int, version: str) -> dict[str, object]:
    remaining = [requests]
    latencies: list[float] = []
    errors: list[str] = []
    prefix = f"{version} - Request ".encode()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_worker(port, remaining, latencies, errors, prefix) for _ in range(concurrency)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    errors.extend(repr(r) for r in results if isinstance(r, BaseException))
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _percentile(latencies, 0.50) * 1000.0,
        "p99_ms": _percentile(latencies, 0.99) * 1000.0,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def client_main(port: int, requests: int, concurrency: int, version: str) -> None:
    result = asyncio.run(
        asyncio.wait_for(_load(port, requests, concurrency, version), DEADLINE_SECONDS)
    )
    print(json.dumps(result))


# --- Server and drivers -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, access_log: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        APP_VERSION="v2",
        HOST=HOST,
        PORT=str(port),
        ACCESS_LOG="1" if access_log else "0",
        PYTHONPATH=str(REPO_ROOT),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "app_backend"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # access lines, when on, are written but not kept
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise SystemExit(f"server exited early: {stderr.decode()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.05)
    stop_server(process)
    raise SystemExit("server did not become healthy within 15 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_python_client(port: int, requests: int, concurrency: int) -> dict[str, object]:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client-port",
            str(port),
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS + 30,
        check=True,
    )
    result: dict[str, object] = json.loads(output.stdout)
    return result


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(wrk: str, port: int, concurrency: int, seconds: int) -> dict[str, object]:
    # One wrk thread: the other core is the server's.
    output = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            f"http://{HOST}:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    percentiles = {
        m.group(1): float(m.group(2)) * _WRK_UNITS[m.group(3)]
        for m in re.finditer(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    if rps is None or total is None:
        raise SystemExit(f"could not parse wrk output:\n{output}")
    return {
        "requests": int(total.group(1)),
        "seconds": float(seconds),
        "rps": float(rps.group(1)),
        "p50_ms": percentiles.get("50", float("nan")),
        "p99_ms": percentiles.get("99", float("nan")),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "first_error": socket_errors.group(0) if socket_errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--access-log", action="store_true", help="keep the access log on")
    parser.add_argument(
        "--tool", choices=["auto", "wrk", "python"], default="auto", help="load generator"
    )
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.concurrency <= args.requests:
        parser.error("need 1 <= --concurrency <= --requests")

    if args.client_port is not None:
        client_main(args.client_port, args.requests, args.concurrency, "v2")
        return

    wrk = shutil.which("wrk") if args.tool in {"auto", "wrk"} else None
    if args.tool == "wrk" and wrk is None:
        raise SystemExit("wrk is not on PATH")

    port = _free_port()
    server = start_server(port, args.access_log)
    try:
        run_python_client(port, WARMUP_REQUESTS, min(args.concurrency, WARMUP_REQUESTS))
        if wrk is not None:
            tool = "wrk"
            result = run_wrk(wrk, port, args.concurrency, args.wrk_seconds)
        else:
            tool = "python client"
            result = run_python_client(port, args.requests, args.concurrency)
    finally:
        stop_server(server)

    access = "on" if args.access_log else "off"
    print(
        f"app_backend v2 GET / ({tool}, access log {access}): {result['requests']} requests, "
        f"concurrency {args.concurrency}, {result['seconds']:.1f} s -> "
        f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}"
    )
    if result["first_error"]:
        print(f"first error: {result['first_error']}")


if __name__ == "__main__":
    main()
