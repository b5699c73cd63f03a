"""Latency, throughput and soak of ``POST /v1/recommendations`` behind ``fedpers serve``.

Everything runs on 127.0.0.1 as separate processes: ``fedpers serve`` (a real uvicorn) and
a load generator (``benchmarks/api_loadgen.py``, asyncio sockets, open loop at a fixed
rate with latency measured from each request's scheduled send time, so queueing is not
hidden by coordinated omission).

1. Latency at ``--rate`` req/s (default 200) with an ML-100K-sized model (1,682 items)
   and a synthetic 100,000-item model, each published into a temporary run registry
   (targets: p99 <= 10 ms and <= 25 ms).
2. Sustained maximum throughput (closed loop) of the recommendation route against a
   trivial FastAPI endpoint (``api_trivial_app.py``) served the same way in the same run
   (target: ratio >= 0.5), for the request mix and for each kind of request alone
   (``by_kind``: user vector, events folded in, unknown user), and of the same app with
   its ranking precomputed (``free_ranking``, ``api_free_ranking_app.py``): the ceiling
   of any ranking speed-up.
3. A soak at ``--rate`` for ``--soak-s`` seconds: server RSS over time and errors
   (target: flat memory, zero errors).

The request mix: 60 % a consenting user with a locally fine-tuned vector, 30 % a
consenting user with their last 10 events to fold in, 10 % unknown users (contextual);
``k = 10``, explanations on, a third with MMR diversity 0.3. Rate limiting is off
(``FEDPERS_API_RATE_LIMIT_PER_S=0``): it is a per-key budget, not a server limit. The
service runs as deployed, with its JSON access log (``--log-level info``, one object per
request to the server's log file); the trivial endpoint logs nothing.

Usage::

    python benchmarks/bench_api.py --json                 # the full run (~6 min)
    python benchmarks/bench_api.py --quick --json         # short phases, for development
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLOT = ROOT / "docs" / "img" / "api-latency.png"
DIM = 64
USERS = 100
TENANT = "bench"


def log(message: str) -> None:
    print(f"[bench_api] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_run(root: Path, n_items: int, seed: int) -> Path:
    """A run directory whose registry holds one synthetic model of ``n_items`` items."""
    from fedpers.client.global_model import GlobalModel
    from fedpers.client.model import ModelConfig
    from fedpers.server.checkpoint import sha256_file
    from fedpers.server.rundb import RunDB

    run = root / f"run-{n_items}"
    rng = np.random.default_rng(seed)
    emb = (0.1 * rng.standard_normal((n_items, DIM))).astype(np.float32)
    bias = (0.5 * rng.standard_normal(n_items)).astype(np.float32)
    ids = [str(i + 1) for i in range(n_items)]
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n_items, dim=DIM),
        [emb, bias],
        ids,
        meta={"round": 1, "epsilon": 8.0, "delta": 1e-4, "session": {"weight": 0.1}},
    )
    path = model.save(run / "models" / "round-0001.npz")
    with RunDB.open(run) as db:
        db.write_config({"benchmark": "bench_api", "n_items": n_items})
        db.write_privacy(
            {"unit": "user", "mechanism": "gaussian", "accountant": "rdp", "delta": 1e-4}
        )
        db.register_model(1, path, sha256_file(path), {})
    return run


def prepare_db(run: Path) -> str:
    """Create the API database, a serve key and consent for the benchmark's users."""
    from fedpers.server.api import consent_store
    from fedpers.server.api.auth import create_api_key
    from fedpers.server.api.db import open_api_db
    from fedpers.server.api.settings import ApiSettings, create_ledger_key

    settings = ApiSettings(run_dir=run)
    create_ledger_key(settings.ledger_key_file)
    db = open_api_db(settings.database_path)
    _, secret = create_api_key(db, TENANT, ["serve"], name="bench")
    key = settings.ledger_key()
    for u in range(USERS):
        consent_store.change_consent(
            db, key, TENANT, f"user-{u}", "grant", [1, 5, 6, 11], policy_version="bench",
            source="bench",
        )  # fmt: skip
    db.conn.close()
    return secret


def bodies(n_items: int, seed: int, count: int = 500) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for j in range(count):
        body: dict[str, Any] = {
            "k": 10,
            "explain": True,
            "context": {"device": "mobile", "hour": int(j % 24), "locale": "en-US"},
        }
        if j % 3 == 0:
            body["diversity"] = 0.3
        kind = j % 10
        if kind < 6:
            body["user_id"] = f"user-{j % USERS}"
            vector = 0.3 * rng.standard_normal(DIM)
            body["personal_state"] = {"user_vector": [round(float(x), 5) for x in vector]}
        elif kind < 9:
            body["user_id"] = f"user-{j % USERS}"
            items = rng.choice(n_items, size=10, replace=False) + 1
            body["personal_state"] = {
                "events": [{"item": str(i), "kind": "click"} for i in items.tolist()]
            }
        else:
            body["user_id"] = f"visitor-{j}"
        out.append(body)
    return out


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (kB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


@contextmanager
def server(cmd: list[str], port: int, env: dict[str, str], log_path: Path) -> Iterator[int]:
    env = {**env, **{k: v for k, v in os.environ.items() if k == "FEDPERS_API_RUN_DIR"}}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, proc)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def has_serve_command() -> bool:
    fedpers = Path(sys.executable).with_name("fedpers")
    probe = subprocess.run([str(fedpers), "serve", "--help"], capture_output=True, check=False)
    return probe.returncode == 0


SERVE_COMMAND: list[bool] = []
WORKERS: list[int] = [1]


def serve_cmd(run: Path, port: int) -> list[str]:
    """``fedpers serve`` (or, where it is not installed yet, the same uvicorn factory)."""
    if not SERVE_COMMAND:
        SERVE_COMMAND.append(has_serve_command())
    if SERVE_COMMAND[0]:
        fedpers = Path(sys.executable).with_name("fedpers")
        return [
            str(fedpers), "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(WORKERS[0]), "--log-level", "info",
        ]  # fmt: skip
    os.environ["FEDPERS_API_RUN_DIR"] = str(run)
    return [
        sys.executable, "-m", "uvicorn", "--factory", "fedpers.server.api.main:app_from_env",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS[0]),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def trivial_cmd(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "api_trivial_app:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip


def free_ranking_cmd(port: int) -> list[str]:
    """The real app with its ranking precomputed (``api_free_ranking_app.py``)."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "api_free_ranking_app:create",
        "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def loadgen(mode: str, port: int, key: str | None, body_file: Path, **opts: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "api_loadgen.py"), mode, "--port", str(port)]
    cmd += ["--bodies", str(body_file)]
    if key:
        cmd += ["--key", key]
    for name, value in opts.items():
        cmd += [f"--{name}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def summary(latency_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(latency_ms, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "max_ms": round(float(arr.max()), 3),
        "mean_ms": round(float(arr.mean()), 3),
    }


def latency_phase(
    n_items: int, run: Path, key: str, env: dict[str, str], tmp: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], list[float]]:
    body_file = tmp / f"bodies-{n_items}.json"
    port = free_port()
    with server(serve_cmd(run, port), port, env, tmp / f"serve-{n_items}.log"):
        loadgen("closed", port, key, body_file, duration=args.warmup_s, connections=4, warmup=0)
        log(f"{n_items} items: open loop {args.rate} req/s for {args.latency_s} s")
        res = loadgen(
            "open", port, key, body_file, rate=args.rate, duration=args.latency_s, connections=32
        )
    stats = {"items": n_items, "rate": args.rate, "requests": res["requests"]}
    stats.update(summary(res["latency_ms"]))
    stats["errors"] = res["errors"]
    stats["statuses"] = res["statuses"]
    log(f"{n_items} items: {stats}")
    return stats, res["latency_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="short phases (development)")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-s", type=float, default=30.0)
    parser.add_argument("--throughput-s", type=float, default=10.0)
    parser.add_argument("--soak-s", type=float, default=180.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--phases", default="latency,throughput,soak", help="comma-separated subset to run"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of both servers")
    parser.add_argument(
        "--sizes", default="1682,100000", help="catalogue sizes of the latency phase"
    )
    args = parser.parse_args()
    WORKERS[0] = args.workers
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.quick:
        args.latency_s, args.throughput_s, args.soak_s, args.warmup_s = 5.0, 4.0, 15.0, 1.0
    load_before = os.getloadavg()
    env = {
        **os.environ,
        "FEDPERS_API_RATE_LIMIT_PER_S": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    result: dict[str, Any] = {"benchmark": "api", "cpus": os.cpu_count(), "workers": args.workers}
    wanted = {p.strip() for p in args.phases.split(",") if p.strip()}
    targets: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="fedpers-bench-api-") as name:
        tmp = Path(name)
        latencies: dict[int, list[float]] = {}
        runs = {}
        for n_items in sorted({*sizes, 1682}) if "latency" in wanted else (1682,):
            run = make_run(tmp, n_items, seed=n_items)
            runs[n_items] = (run, prepare_db(run))
            (tmp / f"bodies-{n_items}.json").write_text(json.dumps(bodies(n_items, n_items)))
        if "latency" in wanted:
            phases = []
            for n_items, (run, key) in runs.items():
                if n_items not in sizes:
                    continue
                stats, lat = latency_phase(n_items, run, key, env, tmp, args)
                phases.append(stats)
                latencies[n_items] = lat
            result["latency"] = phases
            p99 = {p["items"]: p["p99_ms"] for p in phases}
            if 1682 in p99:
                targets["p99_1682_le_10ms"] = p99[1682] <= 10.0
            if 100_000 in p99:
                targets["p99_100k_le_25ms"] = p99[100_000] <= 25.0
        run, key = runs[1682]
        body_file = tmp / "bodies-1682.json"
        if "throughput" in wanted:
            result["throughput"] = throughput_phase(run, key, body_file, env, tmp, args)
            targets["throughput_ratio_ge_0_5"] = result["throughput"]["ratio"] >= 0.5
        soak: dict[str, Any] | None = None
        rss: list[tuple[float, int]] = []
        if "soak" in wanted:
            soak, rss = soak_phase(run, key, body_file, env, tmp, args)
            result["soak"] = soak_summary(soak, rss, args)
            targets["soak_zero_errors"] = result["soak"]["errors"] == 0
        if not args.no_plot and latencies and soak is not None:
            plot(latencies, soak, rss)
            result["plot"] = str(PLOT.relative_to(ROOT))
    result["targets"] = targets
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["command"] = "python benchmarks/bench_api.py " + " ".join(sys.argv[1:])
    result["server"] = (
        "fedpers serve"
        if SERVE_COMMAND and SERVE_COMMAND[0]
        else "uvicorn --factory fedpers.server.api.main:app_from_env"
    )
    if args.json:
        print(json.dumps(result))
    else:
        shown = {k: v for k, v in result.items() if k != "soak"}
        print(json.dumps(shown, indent=2))
    return 0


def throughput_phase(
    run: Path, key: str, body_file: Path, env: dict[str, str], tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Closed-loop maximum of the service (the mix, then each kind of request), of the
    service with its ranking precomputed, and of the trivial endpoint."""

    def closed_loop(port: int, key: str | None, bodies: Path) -> dict[str, Any]:
        return loadgen(
            "closed", port, key, bodies, duration=args.throughput_s,
            connections=args.connections, warmup=args.warmup_s,
        )  # fmt: skip

    port = free_port()
    kinds = _bodies_by_kind(body_file, tmp)
    by_kind: dict[str, float] = {}
    with server(serve_cmd(run, port), port, env, tmp / "serve-tp.log"):
        log(f"throughput: recommendations, {args.connections} connections")
        recs = closed_loop(port, key, body_file)
        for kind, kind_file in kinds.items():
            log(f"throughput: {kind} requests only")
            by_kind[kind] = closed_loop(port, key, kind_file)["throughput_rps"]
    port = free_port()
    free_env = {**env, "FEDPERS_API_RUN_DIR": str(run), "FEDPERS_API_LOG_LEVEL": "info"}
    with server(free_ranking_cmd(port), port, free_env, tmp / "free-ranking.log"):
        log("throughput: the service with its ranking precomputed")
        free = closed_loop(port, key, body_file)
    port = free_port()
    with server(trivial_cmd(port), port, env, tmp / "trivial.log"):
        log("throughput: trivial endpoint")
        trivial = closed_loop(port, None, body_file)
    out = {
        "recommendations_rps": round(recs["throughput_rps"], 1),
        "recommendations_errors": recs["errors"],
        "trivial_rps": round(trivial["throughput_rps"], 1),
        "trivial_errors": trivial["errors"],
        "ratio": round(recs["throughput_rps"] / trivial["throughput_rps"], 3),
        "free_ranking_rps": round(free["throughput_rps"], 1),
        "free_ranking_ratio": round(free["throughput_rps"] / trivial["throughput_rps"], 3),
        "free_ranking_errors": free["errors"],
        "by_kind": {
            kind: {"rps": round(rps, 1), "ratio": round(rps / trivial["throughput_rps"], 3)}
            for kind, rps in by_kind.items()
        },
        "connections": args.connections,
        "duration_s": args.throughput_s,
    }
    log(f"throughput: {out}")
    return out


def _bodies_by_kind(body_file: Path, tmp: Path) -> dict[str, Path]:
    """The mix's bodies split by kind of request, one file each (for the ratio per kind)."""
    kinds: dict[str, list[dict[str, Any]]] = {"user_vector": [], "events": [], "unknown": []}
    for body in json.loads(body_file.read_text()):
        state = body.get("personal_state") or {}
        kind = "user_vector" if "user_vector" in state else "events" if state else "unknown"
        kinds[kind].append(body)
    out = {}
    for kind, items in kinds.items():
        out[kind] = tmp / f"bodies-{kind}.json"
        out[kind].write_text(json.dumps(items))
    return out


def soak_phase(
    run: Path, key: str, body_file: Path, env: dict[str, str], tmp: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """Open loop at the target rate; this process samples the server's RSS meanwhile."""
    port = free_port()
    with server(serve_cmd(run, port), port, env, tmp / "serve-soak.log") as pid:
        loadgen("closed", port, key, body_file, duration=args.warmup_s, connections=4, warmup=0)
        log(f"soak: {args.rate} req/s for {args.soak_s} s")
        cmd = [sys.executable, str(HERE / "api_loadgen.py"), "open", "--port", str(port)]
        cmd += ["--bodies", str(body_file), "--key", key, "--rate", str(args.rate)]
        cmd += ["--duration", str(args.soak_s), "--connections", "32"]
        out_path = tmp / "soak.json"  # a file, not a pipe: the answer is larger than a pipe
        with open(out_path, "w") as out_file:
            gen = subprocess.Popen(cmd, stdout=out_file, text=True)
            t0 = time.monotonic()
            rss: list[tuple[float, int]] = []
            while gen.poll() is None:
                rss.append((round(time.monotonic() - t0, 1), rss_kb(pid)))
                time.sleep(2.0)
    if gen.returncode != 0:
        raise RuntimeError(f"the soak's load generator exited with {gen.returncode}")
    soak: dict[str, Any] = json.loads(out_path.read_text().strip().splitlines()[-1])
    return soak, rss


def soak_summary(
    soak: dict[str, Any], rss: list[tuple[float, int]], args: argparse.Namespace
) -> dict[str, Any]:
    mib = np.asarray([r for _, r in rss], dtype=np.float64) / 1024.0
    half = max(1, mib.size // 2)
    out = {
        "rate": args.rate,
        "duration_s": args.soak_s,
        "requests": soak["requests"],
        "errors": soak["errors"],
        **summary(soak["latency_ms"]),
        "rss_mib_start": round(float(mib[0]), 1),
        "rss_mib_end": round(float(mib[-1]), 1),
        "rss_mib_max": round(float(mib.max()), 1),
        "rss_mib_first_half_mean": round(float(mib[:half].mean()), 1),
        "rss_mib_second_half_mean": round(float(mib[half:].mean()), 1),
        "rss_samples": [[t, round(r / 1024.0, 1)] for t, r in rss],
    }
    log(f"soak: errors {soak['errors']}, RSS {mib[0]:.1f} -> {mib[-1]:.1f} MiB")
    return out


def plot(
    latencies: dict[int, list[float]], soak: dict[str, Any], rss: list[tuple[float, int]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for n_items, lat in latencies.items():
        arr = np.sort(np.asarray(lat)[np.isfinite(lat)])
        frac = np.arange(1, arr.size + 1) / arr.size
        left.plot(arr, frac, label=f"{n_items:,} items")
    left.axvline(10, color="grey", ls=":", lw=1)
    left.axvline(25, color="grey", ls="--", lw=1)
    left.set_xscale("log")
    left.set_xlabel("latency (ms, from scheduled send)")
    left.set_ylabel("fraction of requests")
    left.set_title("POST /v1/recommendations at 200 req/s")
    left.legend()
    sched = np.asarray(soak["scheduled_s"])
    lat = np.asarray(soak["latency_ms"])
    seconds = np.floor(sched).astype(int)
    p99 = [np.percentile(lat[seconds == s], 99) for s in np.unique(seconds)]
    right.plot(np.unique(seconds), p99, color="tab:blue", lw=1, label="p99 per second")
    right.set_xlabel("soak time (s)")
    right.set_ylabel("p99 latency (ms)", color="tab:blue")
    twin = right.twinx()
    twin.plot([t for t, _ in rss], [r / 1024.0 for _, r in rss], color="tab:red", label="RSS")
    twin.set_ylabel("server RSS (MiB)", color="tab:red")
    twin.set_ylim(bottom=0)
    right.set_title("soak: 1,682 items, 200 req/s")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
