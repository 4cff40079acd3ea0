"""API keys for operators: create (the plain key is shown once), list and revoke.

The functions take a session and leave the commit to the caller, like ``service.registry``; the
small command line around them (``python -m service.cli_keys create --name ci --scope train``)
uses the database of ``ADACS_DATABASE_URL`` and is meant to become ``adacs keys`` later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.security import SCOPES, check_scopes, hash_api_key, new_api_key
from service.db import ApiKey, utcnow

__all__ = ["create_api_key", "revoke_api_key", "list_api_keys", "main"]


def create_api_key(session: Session, name: str, scopes: Sequence[str]) -> str:
    """Store a new key's hash with ``scopes`` and return the plain key (it cannot be recovered later)."""
    plain = new_api_key()
    session.add(ApiKey(name=name, key_hash=hash_api_key(plain), scopes=check_scopes(set(scopes))))
    session.flush()
    return plain


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Mark key ``key_id`` revoked (kept, so jobs it started keep their owner); LookupError if unknown."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise LookupError(f"no API key with id {key_id!r}; 'list' shows the ids")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.cli_keys", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what uses the key, e.g. 'ci' or 'alice'")
    create.add_argument("--scope", action="append", required=True, choices=sorted(SCOPES),
                        help="what the key may start; repeat for both")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    sub.add_parser("list", help="list keys (ids, names, scopes; never the keys)")
    args = parser.parse_args(argv)

    from service.core.config import get_settings
    from service.db import make_engine, session_scope

    engine = make_engine(get_settings().database_url)
    try:
        with session_scope(engine) as session:
            if args.command == "create":
                print(create_api_key(session, args.name, args.scope))
            elif args.command == "revoke":
                print(f"revoked {revoke_api_key(session, args.id).name!r}")
            else:
                for key in list_api_keys(session):
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked else "active"
                    print(f"{key.id}  {key.name:<20} {','.join(key.scopes):<16} {state}")
    except LookupError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
