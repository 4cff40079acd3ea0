"""The ``--data SPEC`` strings of the CLI: which registration pairs to load.

A spec is ``KIND`` or ``KIND:REST``; the kinds supported:

``synthetic`` / ``synthetic:key=value,key=value``
    The phantom of :mod:`models.data.synthetic`: the options are the fields of ``PhantomConfig``
    (``dims``, ``size``, ``n``, ``seed``, ``motion``, ``noise``, ``covisibility``, ``inconsistency``),
    each converted to its field's type. Example: ``synthetic:dims=3,size=32,n=8``.

``acdc-h5:PATH`` / ``acdc-h5:PATH:SPLIT`` / ``acdc-h5:PATH[:SPLIT]:crop=N[:label=L]``
    ACDC in the SSL4MIS HDF5 layout, read by :func:`models.data.acdc_h5.load_acdc_h5`. ``SPLIT`` is
    ``train``, ``val`` or ``all`` (default ``all``); ``crop=N`` sets the side of the square crop around
    the ED myocardium (default 128; ``crop=none`` keeps the native grid); ``label=L`` the label the
    crop is centred on and that must be present in both frames (default 2, the myocardium). ``PATH``
    may itself contain ``:``: only trailing ``:``-pieces that are a known split or a known
    ``key=value`` option are taken off it, e.g. ``acdc-h5:C:/data/acdc:val``.

``acdc:PATH`` / ``acdc:PATH[:SPLIT][:crop=N][:label=L]``
    ACDC in its official NIfTI layout (``[training/|testing/]patientNNN/Info.cfg`` and
    ``patientNNN_frameXX[_gt].nii.gz``), read by :func:`models.data.acdc_nifti.load_acdc_nifti` as 2D
    slice pairs with ``spacing_mm``. ``SPLIT`` is ``train``, ``val``, ``test`` or ``all`` (default
    ``all``; ``test`` is the official test set, ``val`` the last 20% of the other patients by
    number); ``crop`` and ``label`` as for ``acdc-h5``. Example: ``acdc:/data/ACDC:val``.

``camus:PATH`` / ``camus:PATH[:SPLIT][:view=2CH|4CH|both][:size=N]``
    CAMUS echocardiography (original ``.mhd`` release or the newer ``database_nifti`` release), read
    by :func:`models.data.camus.load_camus`: one ED -> ES pair per patient and view on an isotropic
    ``N x N`` grid (default 128) covering the image. ``SPLIT`` as for ``acdc`` (the official
    ``subgroup_*.txt`` lists decide when present); ``view`` defaults to ``both``.
    Example: ``camus:/data/CAMUS_public:train:view=4CH``.

``manifest:PATH.csv`` / ``manifest:PATH.csv:crop=N``
    A CSV of ``fixed,moving[,fixed_mask,moving_mask][,id][,subject]`` paths in any readable format,
    read by :func:`models.data.manifest.load_manifest`: each row one 2D or 3D pair on the fixed
    image's grid; ``crop=N`` crops/pads to ``N`` per axis around the moving mask (default: no crop).

For every kind with a ``PATH``, only trailing ``:``-pieces that are a known split or a known
``key=value`` option are taken off it, so paths may contain ``:``.

``load_pairs(spec, root=FOLDER)`` confines what a spec reads to ``FOLDER``: its ``PATH`` must resolve
inside it, and a manifest's cells too (:func:`models.data.manifest.load_manifest`). The service passes
an uploaded dataset's folder, because a user's manifest would otherwise read any file the server can;
the CLI passes nothing, so a local user's spec may name any path. ``root`` is an argument, not a piece
of the spec, because paths may contain ``:`` and a spec is text a user may write.

New kinds are added by writing a ``(load, describe)`` pair of functions of ``REST`` and registering it
in ``_KINDS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from models.data.pairs import MYOCARDIUM, PairSample

__all__ = ["describe_spec", "load_pairs", "supported_kinds"]


class _Kind(NamedTuple):
    load: Callable[[str, Path | None], list[PairSample]]  # REST, root (None: anywhere) -> pairs
    describe: Callable[[str], dict[str, Any]]  # REST -> JSON-able options (without "kind")


def load_pairs(spec: str, *, root: str | Path | None = None) -> list[PairSample]:
    """The registration pairs a ``--data`` spec names (see the module docstring for the syntax).

    ``root`` confines every file the spec reads to that folder (uploaded datasets); ``ValueError``
    when its path or a manifest's cell leads out of it.
    """
    kind, rest = _split_kind(spec)
    return _KINDS[kind].load(rest, None if root is None else Path(root).resolve())


def _inside(kind: str, path: str, root: Path | None) -> str:
    """``path`` unchanged, refused when ``root`` is given and it (``~`` unexpanded, links followed) leaves it."""
    if root is not None and (path.startswith("~") or not Path(path).resolve().is_relative_to(root)):
        raise ValueError(f"the {kind} path lies outside the dataset's folder")
    return path


def describe_spec(spec: str) -> dict[str, Any]:
    """A JSON-able description of a spec for model cards: ``{"kind": ..., **options}``; reads no data."""
    kind, rest = _split_kind(spec)
    return {"kind": kind, **_KINDS[kind].describe(rest)}


def supported_kinds() -> tuple[str, ...]:
    """The spec kinds understood, in the order they are documented."""
    return tuple(_KINDS)


def _split_kind(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty data spec {spec!r}; supported kinds: {', '.join(_KINDS)}")
    kind, _, rest = spec.strip().partition(":")
    if kind not in _KINDS:
        raise ValueError(f"unknown data spec kind {kind!r} in {spec!r}; supported kinds: {', '.join(_KINDS)}")
    return kind, rest


# ---------------------------------------------------------------------------------------------------
# synthetic

_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(key: str, text: str, target: Any) -> Any:
    """``text`` as the type ``target`` (a type or, under postponed annotations, its name)."""
    kind = _TYPE_NAMES.get(target, target) if isinstance(target, str) else target
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(text)
            return lowered in _TRUE
        if kind in (int, float, str):
            return kind(text)
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(f"bad value in synthetic option {key}={text!r}: expected {name}") from None
    return text  # a type we do not convert: the config validates it


def _synthetic_config(rest: str) -> Any:
    from models.data.synthetic import PhantomConfig  # lazily: the phantom is only needed for this kind

    fields = {f.name: f for f in dataclasses.fields(PhantomConfig)}
    options: dict[str, Any] = {}
    for piece in rest.split(","):
        if not piece.strip():
            continue
        key, sep, value = piece.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"malformed synthetic option {piece.strip()!r}: expected key=value")
        if key not in fields:
            raise ValueError(f"unknown synthetic option {key!r}; allowed: {', '.join(fields)}")
        if key in options:
            raise ValueError(f"synthetic option {key!r} given twice")
        options[key] = _convert(key, value, fields[key].type)
    return PhantomConfig(**options)


def _load_synthetic(rest: str, root: Path | None) -> list[PairSample]:
    """Phantoms are made in memory: there is no file to confine to ``root``."""
    from models.data.synthetic import make_phantom_dataset

    return make_phantom_dataset(_synthetic_config(rest))


def _describe_synthetic(rest: str) -> dict[str, Any]:
    return {"config": dataclasses.asdict(_synthetic_config(rest))}


# ---------------------------------------------------------------------------------------------------
# acdc-h5

_ACDC_SPLITS = ("train", "val", "all")
_ACDC_DEFAULTS: dict[str, Any] = {"split": "all", "crop": 128, "label": MYOCARDIUM}


def _acdc_option(piece: str) -> tuple[str, Any] | None:
    """``(name, value)`` if ``piece`` is a split or a ``crop=``/``label=`` option, else None."""
    if piece in _ACDC_SPLITS:
        return "split", piece
    key, sep, value = piece.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in ("crop", "label"):
        return None
    if key == "crop" and value.lower() == "none":
        return key, None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"bad value in acdc-h5 option {piece!r}: expected an integer") from None
    if key == "crop" and number <= 0:
        raise ValueError(f"bad value in acdc-h5 option {piece!r}: crop must be positive (or none)")
    return key, number


def _acdc_h5_options(rest: str) -> dict[str, Any]:
    pieces = rest.split(":")
    options: dict[str, Any] = {}
    while len(pieces) > 1:  # take known trailing pieces off; what remains is the path
        option = _acdc_option(pieces[-1])
        if option is None or option[0] in options:
            break
        options[option[0]] = option[1]
        pieces.pop()
    path = ":".join(pieces)
    if not path:
        raise ValueError("acdc-h5 spec needs a path: acdc-h5:PATH[:train|val|all][:crop=N][:label=L]")
    return {"path": path, **_ACDC_DEFAULTS, **options}


def _load_acdc_h5(rest: str, root: Path | None) -> list[PairSample]:
    from models.data.acdc_h5 import load_acdc_h5

    options = _acdc_h5_options(rest)
    path = _inside("acdc-h5", options["path"], root)
    return load_acdc_h5(path, split=options["split"], crop=options["crop"], label=options["label"])


def _describe_acdc_h5(rest: str) -> dict[str, Any]:
    return _acdc_h5_options(rest)


# ---------------------------------------------------------------------------------------------------
# acdc (official NIfTI layout), camus, manifest: PATH followed by trailing options

_Option = tuple[str, Any]


def _count_option(kind: str, piece: str, value: str, *, minimum: int, none_ok: bool) -> Any:
    """The integer of a ``key=value`` option (``none`` -> None where allowed), at least ``minimum``."""
    if none_ok and value.lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"bad value in {kind} option {piece!r}: expected an integer") from None
    if number < minimum:
        raise ValueError(f"bad value in {kind} option {piece!r}: must be at least {minimum}")
    return number


def _path_and_options(
    kind: str, rest: str, parse: Callable[[str], _Option | None], usage: str
) -> tuple[str, dict[str, Any]]:
    """Take recognised trailing ``:``-pieces off ``rest`` (each option once); the remainder is the path."""
    pieces = rest.split(":")
    options: dict[str, Any] = {}
    while len(pieces) > 1:
        option = parse(pieces[-1].strip())
        if option is None or option[0] in options:
            break
        options[option[0]] = option[1]
        pieces.pop()
    path = ":".join(pieces)
    if not path.strip():
        raise ValueError(f"{kind} spec needs a path: {usage}")
    return path, options


_SPLITS_WITH_TEST = ("train", "val", "test", "all")


def _acdc_nifti_option(piece: str) -> _Option | None:
    if piece in _SPLITS_WITH_TEST:
        return "split", piece
    key, sep, value = piece.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in ("crop", "label"):
        return None
    if key == "crop":
        return key, _count_option("acdc", piece, value, minimum=1, none_ok=True)
    return key, _count_option("acdc", piece, value, minimum=0, none_ok=False)


def _acdc_nifti_options(rest: str) -> dict[str, Any]:
    path, options = _path_and_options(
        "acdc", rest, _acdc_nifti_option, "acdc:PATH[:train|val|test|all][:crop=N][:label=L]"
    )
    return {"path": path, "split": "all", "crop": 128, "label": MYOCARDIUM, **options}


def _load_acdc_nifti(rest: str, root: Path | None) -> list[PairSample]:
    from models.data.acdc_nifti import load_acdc_nifti

    options = _acdc_nifti_options(rest)
    path = _inside("acdc", options["path"], root)
    return load_acdc_nifti(path, split=options["split"], crop=options["crop"], label=options["label"])


def _camus_option(piece: str) -> _Option | None:
    if piece in _SPLITS_WITH_TEST:
        return "split", piece
    key, sep, value = piece.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in ("view", "size"):
        return None
    if key == "size":
        return key, _count_option("camus", piece, value, minimum=2, none_ok=False)
    view = value.upper()
    if view not in ("2CH", "4CH", "BOTH"):
        raise ValueError(f"bad value in camus option {piece!r}: expected view=2CH, view=4CH or view=both")
    return key, view.lower() if view == "BOTH" else view


def _camus_options(rest: str) -> dict[str, Any]:
    path, options = _path_and_options(
        "camus", rest, _camus_option, "camus:PATH[:train|val|test|all][:view=2CH|4CH|both][:size=N]"
    )
    return {"path": path, "split": "all", "view": "both", "size": 128, **options}


def _load_camus(rest: str, root: Path | None) -> list[PairSample]:
    from models.data.camus import load_camus

    options = _camus_options(rest)
    path = _inside("camus", options["path"], root)
    return load_camus(path, split=options["split"], view=options["view"], size=options["size"])


def _manifest_option(piece: str) -> _Option | None:
    key, sep, value = piece.partition("=")
    if not sep or key.strip() != "crop":
        return None
    return "crop", _count_option("manifest", piece, value.strip(), minimum=1, none_ok=True)


def _manifest_options(rest: str) -> dict[str, Any]:
    path, options = _path_and_options("manifest", rest, _manifest_option, "manifest:PATH.csv[:crop=N]")
    return {"path": path, "crop": None, **options}


def _load_manifest(rest: str, root: Path | None) -> list[PairSample]:
    from models.data.manifest import load_manifest

    options = _manifest_options(rest)
    return load_manifest(options["path"], crop=options["crop"], root=root)


# ---------------------------------------------------------------------------------------------------

#: kind -> (load, describe), both functions of the text after ``KIND:``.
_KINDS: dict[str, _Kind] = {
    "synthetic": _Kind(_load_synthetic, _describe_synthetic),
    "acdc-h5": _Kind(_load_acdc_h5, _describe_acdc_h5),
    "acdc": _Kind(_load_acdc_nifti, _acdc_nifti_options),
    "camus": _Kind(_load_camus, _camus_options),
    "manifest": _Kind(_load_manifest, _manifest_options),
}
