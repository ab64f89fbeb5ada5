"""API keys in the store's database (table ``api_keys``), on the store's connections."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.security.keys import ApiKey, NewApiKey, UnknownKey
from server.security.scopes import Scope
from server.store.schema import api_keys, new_id

Begin = Callable[..., AbstractContextManager[Connection]]
Write = Callable[..., Any]


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id, name=row.name, scopes=tuple(Scope(s) for s in row.scopes),
        experiments=None if row.experiments is None else tuple(row.experiments),
        prefix=row.prefix, created_at=row.created_at, expires_at=row.expires_at,
        revoked_at=row.revoked_at, last_used_at=row.last_used_at)


class SQLKeyStore:
    """The :class:`~server.security.keys.KeyStore` of an SQL store.

    Args:
        begin: The store's ``_begin(write=...)``: one transaction on its engine.
        write: The store's ``_write(fn, attempts)``: a write transaction with retries.
    """

    def __init__(self, begin: Begin, write: Write) -> None:
        self._begin = begin
        self._write = write

    def _rows(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._begin(write=False) as conn:
            return list(conn.execute(query).all())

    def create_key(self, key: NewApiKey) -> ApiKey:
        def tx(conn: Connection) -> ApiKey:
            key_id = new_id()
            conn.execute(api_keys.insert().values(
                id=key_id, name=key.name[:200], secret_hash=key.secret_hash,
                prefix=key.prefix, scopes=[s.value for s in key.scopes],
                experiments=None if key.experiments is None else list(key.experiments),
                created_at=time.time(), expires_at=key.expires_at))
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one()
            return _key(row)

        result: ApiKey = self._write(tx, attempts=2)  # 2: an id collision gets a new id
        return result

    def list_keys(self) -> list[ApiKey]:
        k = api_keys
        return [_key(r) for r in self._rows(sa.select(k).order_by(k.c.created_at, k.c.id))]

    def find_key(self, secret_hash: str) -> ApiKey | None:
        rows = self._rows(sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash))
        return _key(rows[0]) if rows else None

    def revoke_key(self, key_id: str) -> ApiKey:
        def tx(conn: Connection) -> ApiKey:
            k = api_keys
            conn.execute(k.update().where(k.c.id == key_id, k.c.revoked_at.is_(None))
                         .values(revoked_at=time.time()))
            row = conn.execute(sa.select(k).where(k.c.id == key_id)).first()
            if row is None:
                raise UnknownKey(key_id)
            return _key(row)

        result: ApiKey = self._write(tx)
        return result

    def count_unrevoked_keys(self) -> int:
        query = (sa.select(sa.func.count()).select_from(api_keys)
                 .where(api_keys.c.revoked_at.is_(None)))
        with self._begin(write=False) as conn:
            return int(conn.execute(query).scalar_one())

    def touch_key(self, key_id: str, when: float) -> None:
        def tx(conn: Connection) -> None:
            k = api_keys
            conn.execute(k.update().where(k.c.id == key_id).values(last_used_at=when))

        self._write(tx)
