"""``GET /v1/model``, ``/v1/model/download`` and ``/v1/model/report`` (serve scope).

The download is the registry's ``.npz`` as devices load it
(:meth:`fedpers.client.global_model.GlobalModel.load`), with ``ETag: "<sha256>"``; a
device that sends ``If-None-Match`` with the current tag gets ``304 Not Modified``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import FileResponse

from fedpers.server.api.deps import ModelDep, ServeKey
from fedpers.server.api.errors import NotFoundError
from fedpers.server.api.serving_deps import ServedDep
from fedpers.server.api.serving_schemas import ModelPublic, PrivacyGuarantee
from fedpers.server.run_dir import RunDirectory

__all__ = ["etag_matches", "router"]

DOWNLOAD_PATH = "/v1/model/download"

router = APIRouter(prefix="/v1/model", tags=["model"])


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or is ``*``); weak tags count."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


@router.get("", response_model=ModelPublic)
def get_model(key: ServeKey, served: ServedDep) -> ModelPublic:
    """The served version, its round, hash, creation time and privacy guarantee."""
    return ModelPublic(
        version=served.version,
        round=served.round,
        sha256=served.sha256,
        created_at=served.created_at,
        n_items=served.n_items,
        dim=served.dim,
        privacy=PrivacyGuarantee.model_validate(dict(served.privacy)),
        download=DOWNLOAD_PATH,
    )


@router.get(
    "/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        304: {"description": "Not Modified"},
    },
)
def download_model(
    key: ServeKey,
    served: ServedDep,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """The model file; ``304`` when ``If-None-Match`` holds its ETag."""
    etag = f'"{served.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Model-Version": str(served.version)}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(
        served.path,
        media_type="application/octet-stream",
        filename=f"fedpers-model-v{served.version}.npz",
        headers=headers,
    )


@router.get("/report", response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
def model_report(key: ServeKey, holder: ModelDep) -> Response:
    """The run's privacy audit report (after ``fedpers audit RUN_DIR``)."""
    path = RunDirectory(holder.run_dir).report_html
    if not path.is_file():
        raise NotFoundError(
            f"no audit report yet: run `fedpers audit {holder.run_dir}` to write {path.name}"
        )
    return FileResponse(path, media_type="text/html")
