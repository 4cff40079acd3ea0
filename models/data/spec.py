"""The ``--data SPEC`` strings of the CLI: which registration pairs to load.

A spec is ``KIND`` or ``KIND:REST``; the kinds supported so far:

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

New kinds are added by writing a ``(load, describe)`` pair of functions of ``REST`` and registering it
in ``_KINDS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from models.data.pairs import MYOCARDIUM, PairSample

__all__ = ["describe_spec", "load_pairs", "supported_kinds"]


class _Kind(NamedTuple):
    load: Callable[[str], list[PairSample]]  # REST -> pairs
    describe: Callable[[str], dict[str, Any]]  # REST -> JSON-able options (without "kind")


def load_pairs(spec: str) -> list[PairSample]:
    """The registration pairs a ``--data`` spec names (see the module docstring for the syntax)."""
    kind, rest = _split_kind(spec)
    return _KINDS[kind].load(rest)


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


def _load_synthetic(rest: str) -> list[PairSample]:
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


def _load_acdc_h5(rest: str) -> list[PairSample]:
    from models.data.acdc_h5 import load_acdc_h5

    options = _acdc_h5_options(rest)
    return load_acdc_h5(options["path"], split=options["split"], crop=options["crop"], label=options["label"])


def _describe_acdc_h5(rest: str) -> dict[str, Any]:
    return _acdc_h5_options(rest)


# ---------------------------------------------------------------------------------------------------

#: kind -> (load, describe), both functions of the text after ``KIND:``.
_KINDS: dict[str, _Kind] = {
    "synthetic": _Kind(_load_synthetic, _describe_synthetic),
    "acdc-h5": _Kind(_load_acdc_h5, _describe_acdc_h5),
}
