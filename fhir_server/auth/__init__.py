"""Authentication (SMART App Launch 2: Backend Services) and scope checks.

- ``service.AuthService``: bearer token → ``RequestContext``; the token endpoint; discovery; dev tokens.
- ``access``: the interaction each request is and the ``ScopeGuard`` the Router runs on every
  request and Bundle entry (``Guard`` is the extension point for agency/role/consent policies).
- ``events``: the one place denials (and issued tokens) are recorded (extension point: audit).
- ``scopes`` (pure), ``tokens``/``assertions``/``issuers`` (JWT rules), ``keys`` (signing keys,
  rotation), ``clients`` (registry, JWK Sets), ``context`` (purpose of use, break-glass),
  ``smart`` (Flask endpoints), ``cli`` (``client``, ``dev-token``, ``auth-key`` commands).

docs/security.md describes the threat model and how to use all of it.
"""
