"""API keys: how they are made, stored and checked.

A key is shown to its owner once and only its SHA-256 is stored (``ApiKey.key_hash``): keys are
32 random bytes, so an unsalted fast hash is enough (nothing to brute-force), and a hash lookup
stays a single indexed query. Scopes say what a key may do: ``register`` starts registrations,
``train`` uploads datasets and starts trainings, ``admin`` changes the model registry (upload,
promote, demote, delete) and sees every owner's jobs, datasets and models. ``admin`` implies the
other two (:func:`grants`), so an operator needs one key.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["SCOPES", "ADMIN", "KEY_PREFIX", "new_api_key", "hash_api_key", "check_scopes", "grants"]

ADMIN = "admin"
SCOPES = frozenset({"register", "train", ADMIN})
KEY_PREFIX = "adacs_"  # lets secret scanners and humans recognise a leaked key


def new_api_key() -> str:
    """A fresh secret key, e.g. ``adacs_3q2...``; store only :func:`hash_api_key` of it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of a key: what ``ApiKey.key_hash`` holds and what a lookup compares."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_scopes(scopes: list[str] | set[str] | frozenset[str]) -> list[str]:
    """Sorted, de-duplicated scopes; a ValueError names any unknown one."""
    unknown = set(scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known scopes: {sorted(SCOPES)}")
    if not scopes:
        raise ValueError(f"an API key needs at least one scope out of {sorted(SCOPES)}")
    return sorted(set(scopes))


def grants(scopes: list[str] | set[str] | frozenset[str], scope: str) -> bool:
    """Whether a key holding ``scopes`` may do what ``scope`` allows (``admin`` may do everything)."""
    return scope in scopes or ADMIN in scopes
