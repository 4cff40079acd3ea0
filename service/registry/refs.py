"""Model references: ``name`` (its production version), ``name:3``, ``name:latest``, ``name@staging``.

Names and stages are restricted so that ``:`` and ``@`` can never be part of either, and so that
a reference is safe in a URL path and a file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.registry.errors import InvalidReference

__all__ = ["NAME_PATTERN", "STAGE_PATTERN", "PRODUCTION", "LATEST", "ModelRef", "parse_ref", "check_name",
           "check_stage"]

PRODUCTION = "production"
LATEST = "latest"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STAGE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
_NAME = re.compile(NAME_PATTERN)
_STAGE = re.compile(STAGE_PATTERN)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidReference(f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit")
    return name


def check_stage(stage: str) -> str:
    if not isinstance(stage, str) or not _STAGE.match(stage) or stage == LATEST:
        raise InvalidReference(f"invalid stage {stage!r}: use 1-32 lower-case letters, digits, '_' or '-', "
                               f"starting with a letter (e.g. 'production', 'staging'; not {LATEST!r})")
    return stage


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``stage`` is set (``latest`` has neither)."""

    name: str
    version: int | None = None
    stage: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.stage}" if self.stage else f"{self.name}:{LATEST}"


def parse_ref(text: str) -> ModelRef:
    """``"m"`` -> production of ``m``; ``"m:3"`` -> version 3; ``"m:latest"``; ``"m@staging"``.

    >>> parse_ref("cardiac:3")
    ModelRef(name='cardiac', version=3, stage=None)
    >>> parse_ref("cardiac")
    ModelRef(name='cardiac', version=None, stage='production')
    """
    if not isinstance(text, str):
        raise InvalidReference(f"a model reference is a string, got {type(text).__name__}")
    if "@" in text:
        name, _, stage = text.partition("@")
        return ModelRef(check_name(name), stage=check_stage(stage))
    if ":" in text:
        name, _, version = text.partition(":")
        if version == LATEST:
            return ModelRef(check_name(name))
        if not re.fullmatch(r"[0-9]{1,9}", version) or int(version) < 1:
            raise InvalidReference(f"invalid model reference {text!r}: after ':' comes a version number "
                                   f"(1, 2, ...) or {LATEST!r}; use 'name@stage' for a stage")
        return ModelRef(check_name(name), version=int(version))
    return ModelRef(check_name(text), stage=PRODUCTION)
