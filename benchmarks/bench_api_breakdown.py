"""Where a recommendation request's CPU goes: the service against the trivial endpoint.

``bench_api.py`` measures throughput over real sockets; this benchmark explains its ratio
by measuring CPU time per request *inside one process* (``time.process_time``, so other
jobs on the machine inflate it far less than wall time), with no HTTP parsing:

1. ``trivial_app_ms``: ``benchmarks/api_trivial_app.py`` (FastAPI parses the same JSON
   body and answers a constant), driven through its ASGI interface;
2. ``service_ms``: the real ``fedpers serve`` app (``create_app``: middlewares, key
   authentication, consent read, ranking, response) on the same request mix as
   ``bench_api.py`` (60 % user vector, 30 % last 10 events folded in, 10 % unknown users;
   ``k = 10``, explanations on, a third with MMR diversity 0.3);
3. ``request_path_ms``: the same app and requests with the route's ranking call replaced
   by a precomputed answer of the same basis (FastAPI, validation, authentication,
   consent, observability, serialisation: everything but the ranking);
4. ``ranking_ms``: :func:`fedpers.server.api.recommender.recommend` alone for each kind of
   request, and their mix-weighted mean (in the service it costs ``service_ms -
   request_path_ms``, a little more than alone: the rest of the request's allocations
   make the garbage collector run more often).

Half of the trivial endpoint's throughput needs a request to cost at most twice the
trivial endpoint's CPU (plus uvicorn's share of both); these figures say how far each
part is from that.

Usage::

    python benchmarks/bench_api_breakdown.py --json
    python benchmarks/bench_api_breakdown.py --items 100000 --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_api  # noqa: E402  (the same run, key, consent and request mix)
from api_free_ranking_app import ranking_precomputed  # noqa: E402

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _post(app: Asgi, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One POST through ``app``'s ASGI interface; the response status."""
    statuses: list[int] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # never: the app has read the whole body
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)
    return statuses[0]


async def _cpu_per_request(
    app: Asgi, bodies: list[bytes], headers: list[tuple[bytes, bytes]], n: int
) -> float:
    """CPU milliseconds per request over ``n`` requests (after a warm-up of 50)."""
    for body in bodies[:50]:
        status = await _post(app, "/v1/recommendations", body, headers)
        if status != 200:
            raise RuntimeError(f"warm-up request answered {status}")
    start = time.process_time()
    for i in range(n):
        await _post(app, "/v1/recommendations", bodies[i % len(bodies)], headers)
    return 1000.0 * (time.process_time() - start) / n


def _ranking_ms(run: Path, raw: list[dict[str, Any]], n: int) -> dict[str, float]:
    """:func:`recommend` alone, per kind of request (CPU ms), with the served model."""
    from fedpers.server.api.model_state import ModelHolder
    from fedpers.server.api.recommender import (
        PERSONALISE_PURPOSES,
        PersonalState,
        RecommendationQuery,
        decide_basis,
        recommend,
    )
    from fedpers.server.api.serving_schemas import RecommendationRequest

    class Consenting:
        known, erased, objection = True, False, False
        granted = frozenset(PERSONALISE_PURPOSES)

    class Unknown:
        known, erased, objection, granted = False, False, False, frozenset()

    holder = ModelHolder(run, reload_interval_s=3600.0)
    holder.start()
    try:
        served = holder.current()
        if served is None:
            raise RuntimeError(f"no model loaded from {run}: {holder.last_error}")
        kinds: dict[str, list[tuple[Any, Any]]] = {"vector": [], "events": [], "unknown": []}
        for body in raw:
            req = RecommendationRequest.model_validate(body)
            sent, state = req.personal_state, None
            if sent is not None:
                events = None if sent.events is None else [e.item for e in sent.events]
                state = PersonalState(user_vector=sent.user_vector, events=events)
            kind = "unknown" if state is None else ("vector" if sent.user_vector else "events")
            consent = Unknown() if state is None else Consenting()
            query = RecommendationQuery(
                user_id=req.user_id,
                k=req.k,
                context=req.context.model_dump(exclude_none=True),
                diversity=req.diversity or 0.0,
                explain=req.explain,
                state=state,
            )
            kinds[kind].append((query, decide_basis(consent, False, state is not None)))
        out: dict[str, float] = {}
        for kind, queries in kinds.items():
            start = time.process_time()
            for i in range(n):
                query, decision = queries[i % len(queries)]
                recommend(served, query, decision)
            out[kind] = round(1000.0 * (time.process_time() - start) / n, 4)
        shares = {kind: len(q) / len(raw) for kind, q in kinds.items()}
        out["mix"] = round(sum(out[k] * shares[k] for k in kinds), 4)
        return out
    finally:
        holder.stop()


async def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from api_trivial_app import app as trivial_app

    from fedpers.server.api.main import create_app
    from fedpers.server.api.settings import ApiSettings

    run = bench_api.make_run(tmp, args.items, seed=args.items)
    key = bench_api.prepare_db(run)
    raw = bench_api.bodies(args.items, args.items)
    bodies = [json.dumps(b).encode() for b in raw]
    json_type = (b"content-type", b"application/json")
    trivial = await _cpu_per_request(trivial_app, bodies, [json_type], args.requests)
    service_app = create_app(ApiSettings(run_dir=run, rate_limit_per_s=0))
    headers = [(b"authorization", f"Bearer {key}".encode()), json_type]
    async with service_app.router.lifespan_context(service_app):
        service = await _cpu_per_request(service_app, bodies, headers, args.requests)
        with ranking_precomputed():
            request_path = await _cpu_per_request(service_app, bodies, headers, args.requests)
    ranking = _ranking_ms(run, raw, args.requests)
    return {
        "trivial_app_ms": round(trivial, 4),
        "service_ms": round(service, 4),
        "request_path_ms": round(request_path, 4),
        "ranking_in_service_ms": round(service - request_path, 4),
        "ranking_ms": ranking,
        "service_over_trivial": round(service / trivial, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--items", type=int, default=1682, help="catalogue size")
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    args = parser.parse_args()
    os.environ.setdefault("FEDPERS_API_LOG_LEVEL", "warning")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedpers-bench-api-breakdown-") as name:
        figures = asyncio.run(_measure(args, Path(name)))
    result = {
        "benchmark": "api_breakdown",
        "items": args.items,
        "requests": args.requests,
        **figures,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python benchmarks/bench_api_breakdown.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
