"""Who may do what: API keys, scopes, and the per-caller request budget.

No web framework and no SQL in here (``tests/test_no_heavy_imports.py``): the HTTP side is
``server/api/security.py``, the key table is ``server/store/keys.py``.
"""

from server.security.scopes import ANONYMOUS, Forbidden, Principal, Scope, Unauthenticated

__all__ = ["ANONYMOUS", "Forbidden", "Principal", "Scope", "Unauthenticated"]
