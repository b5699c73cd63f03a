"""``fedpers keys``: generate, rotate and inspect CKKS key sets for secure aggregation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedpers.privacy.errors import FedpersError

if TYPE_CHECKING:  # TenSEAL loads with fedpers.privacy.secagg: only inside the commands
    from fedpers.privacy.secagg import KeySetInfo

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help=(
        "Generate, rotate and inspect CKKS key sets for secure aggregation.\n\n"
        "A key-set directory holds public.ctx (public key only: give it to the coordinator, "
        "cohort nodes and devices), secret.ctx (the secret key: give it to the key holder "
        "alone) and keyset.json (key id and parameters). Every file is created 0600, the "
        "directory 0700.\n\n"
        "Start with `fedpers keys generate keys/`, then `fedpers keys show keys/`."
    ),
    no_args_is_help=True,
)

DirArg = Annotated[Path, typer.Argument(help="Key-set directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def _parse_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _emit(info: KeySetInfo, *, as_json: bool, action: str) -> None:
    from fedpers.privacy.secagg import PUBLIC_CONTEXT_FILE, SECRET_CONTEXT_FILE

    data: dict[str, Any] = info.to_dict()
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
        return
    params = info.params
    lines = [
        f"{action} {info.directory}",
        f"  key id         {info.key_id}",
        f"  generation     {info.generation} (created {info.created_at})",
        f"  scheme         CKKS, N={params.poly_modulus_degree}, "
        f"coeff moduli {list(params.coeff_mod_bit_sizes)}, scale 2**{params.scale_bits}",
        f"  security       {params.security_bits}-bit classical (HE standard)",
        f"  slots          {params.slots} values per ciphertext",
        f"  public context {info.directory / PUBLIC_CONTEXT_FILE}  -> coordinator, nodes, devices",
        "  secret context "
        + (
            f"{info.directory / SECRET_CONTEXT_FILE}  -> key holder only (0600)"
            if info.has_secret
            else "absent (this copy cannot decrypt)"
        ),
    ]
    if info.previous_key_id:
        lines.append(f"  previous       {info.previous_key_id} (in previous/)")
    typer.echo("\n".join(lines))


def _fail(exc: FedpersError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


@keys_app.command("generate")
def generate(
    directory: DirArg,
    poly_modulus_degree: Annotated[
        int, typer.Option(help="Ring dimension N; N/2 values fit in one ciphertext.")
    ] = 8192,
    coeff_mod_bit_sizes: Annotated[
        str,
        typer.Option(
            help=(
                "Comma-separated prime sizes in bits, the last being the special prime. "
                "60,40,60: ~14.8x float32 upload, 128-bit. 60,60: ~8.3x, 192-bit, sums "
                "must stay below 2**18."
            )
        ),
    ] = "60,40,60",
    scale_bits: Annotated[int, typer.Option(help="CKKS scale as a power of two.")] = 40,
    as_json: JsonOpt = False,
) -> None:
    """Generate a new key set in DIRECTORY (refuses to overwrite one; use rotate)."""
    from fedpers.privacy.secagg import CkksParameters, generate_keys, write_keys

    try:
        params = CkksParameters(
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=_parse_bits(coeff_mod_bit_sizes),
            global_scale=2**scale_bits,
        )
        info = write_keys(directory, generate_keys(params))
    except FedpersError as exc:
        raise _fail(exc) from None
    _emit(info, as_json=as_json, action="generated")


@keys_app.command("rotate")
def rotate(
    directory: DirArg,
    remove_previous: Annotated[
        bool,
        typer.Option(
            "--remove-previous",
            help=(
                "Delete the old generation instead of keeping it in previous/ (by default "
                "it is kept so sums encrypted just before the rotation still decrypt)."
            ),
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace the key set in DIRECTORY with a new generation (same parameters).

    Redistribute public.ctx to the coordinator, nodes and devices, and secret.ctx to the
    key holder, before the next round.
    """
    from fedpers.privacy.secagg import rotate_keys

    try:
        info = rotate_keys(directory, keep_previous=not remove_previous)
    except FedpersError as exc:
        raise _fail(exc) from None
    _emit(info, as_json=as_json, action="rotated")


@keys_app.command("show")
def show(directory: DirArg, as_json: JsonOpt = False) -> None:
    """Show the key set in DIRECTORY: key id, parameters, security, files (never secrets)."""
    from fedpers.privacy.secagg import read_keyset

    try:
        info = read_keyset(directory)
    except FedpersError as exc:
        raise _fail(exc) from None
    _emit(info, as_json=as_json, action="key set")
