"""The trivial FastAPI endpoint bench_api.py compares the recommendation route with.

Same framework, same uvicorn, same worker count, same request bodies: it parses the JSON
body and answers a constant, so the ratio of the two throughputs is what the
recommendation route's work costs on top of FastAPI itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/recommendations")
async def trivial(body: dict[str, Any]) -> dict[str, Any]:
    return {"items": [], "personalised": False}


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
