"""``fhir-server client``, ``fhir-server dev-token`` and ``fhir-server auth-key`` (wired into
fhir_server/cli.py's COMMANDS).

    fhir-server client add --id ID --name N --agency A --role R --scopes "..." (--jwks FILE | --jwks-url URL)
    fhir-server client list | disable ID | enable ID | jwks KEY.pem | assertion --id ID --key KEY.pem
    fhir-server dev-token --client NAME --scope "..." [--practitioner ID] [--purpose CODE] [--agency A --role R]
    fhir-server auth-key list | rotate [--alg ES384] | remove -- KID   (--dev: the development issuer's keys)
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .service import AuthService


@contextmanager
def _auth(settings: "Settings") -> Iterator["AuthService"]:
    from ..cli import database, require_migrated
    from .service import AuthService

    with database(settings) as engine:
        require_migrated(engine, settings)
        yield AuthService(settings, engine)


def _fail(message: str) -> Exception:
    from ..cli import CliError

    return CliError(message)


# -- client -----------------------------------------------------------------------------------------

def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a backend-services client with its public keys")
    add.add_argument("--id", required=True, dest="client_id", help="the client_id (iss/sub of its assertions)")
    add.add_argument("--name", required=True, help="a human-readable name")
    add.add_argument("--agency", required=True, help="the agency it acts for: la:201, police:01, health:RXX, "
                                                     "education:201")
    add.add_argument("--role", required=True, help="mash-practitioner, social-worker, school-dsl, "
                                                   "health-safeguarding, police, auditor, system")
    add.add_argument("--scopes", required=True, help='the most it may be granted, e.g. "system/Patient.rs '
                                                     'system/Observation.cruds"')
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", type=Path, metavar="FILE", help="a JSON file holding its public JWK Set")
    keys.add_argument("--jwks-url", help="a JWK Set URL under FHIR_AUTH_TRUSTED_JWKS_URLS")
    add.add_argument("--replace", action="store_true", help="update an existing registration")
    sub.add_parser("list", help="list registered clients")
    jwks = sub.add_parser("jwks", help="print the public JWK Set of a PEM key (private or public), to register")
    jwks.add_argument("pem", type=Path, help="an RSA (RS384) or EC P-384 (ES384) key in PEM")
    signed = sub.add_parser("assertion", help="sign a client assertion with a client's private key (testing aid: "
                                              "a real client signs its own)")
    signed.add_argument("--id", required=True, dest="client_id", help="the client_id")
    signed.add_argument("--key", required=True, type=Path, help="the client's private key (PEM)")
    signed.add_argument("--kid", help="the key id registered (default: the key's RFC 7638 thumbprint)")
    signed.add_argument("--aud", help="the token endpoint (default: FHIR_BASE_URL/auth/token)")
    for action in ("disable", "enable"):
        p = sub.add_parser(action, help=f"{action} a client (a disabled client gets no new tokens)")
        p.add_argument("client_id")


def run_client(args: argparse.Namespace, settings: "Settings") -> int:
    from ..cli import say
    from .clients import Client, ClientError

    if args.client_command == "jwks":
        say(json.dumps(public_jwks(args.pem), indent=2))
        return 0
    if args.client_command == "assertion":
        say(client_assertion(args.client_id, args.key, args.kid, args.aud or f"{settings.base_url}/auth/token"))
        return 0
    with _auth(settings) as auth:
        if args.client_command == "list":
            clients = auth.clients.all()
            if not clients:
                say("No clients registered. Add one with `fhir-server client add ...`.")
            for c in clients:
                keys = c.jwks_url or f"{len(c.jwks['keys']) if c.jwks else 0} inline key(s)"
                state = "" if c.active else " [disabled]"
                say(f"{c.client_id}{state}\t{c.name}\t{c.agency}\t{c.role}\t{' '.join(c.scopes)}\t{keys}")
            return 0
        if args.client_command in ("disable", "enable"):
            if not auth.clients.set_active(args.client_id, args.client_command == "enable"):
                raise _fail(f"No client {args.client_id!r} is registered")
            say(f"Client {args.client_id} {args.client_command}d.")
            return 0
        jwks = None
        if args.jwks is not None:
            try:
                jwks = json.loads(args.jwks.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise _fail(f"Cannot read a JWK Set from {args.jwks}: {exc}") from exc
        client = Client(args.client_id, args.name, args.agency, args.role, tuple(args.scopes.split()), jwks,
                        args.jwks_url)
        try:
            added = auth.clients.add(client, replace=args.replace)
        except ClientError as exc:
            raise _fail(str(exc)) from exc
        say(f"Registered client {added.client_id} ({added.agency}, {added.role}): {' '.join(added.scopes)}. "
            f"Token endpoint: {auth.token_url}")
    return 0


def public_jwks(pem_file: Path) -> dict:
    """The JWK Set a client registers for the key in ``pem_file`` (kid = RFC 7638 thumbprint)."""
    from cryptography.hazmat.primitives import serialization

    from .keys import SigningKeyError, alg_for, public_jwk

    try:
        data = pem_file.read_bytes()
    except OSError as exc:
        raise _fail(f"Cannot read {pem_file}: {exc.strerror}") from exc
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
        return {"keys": [public_jwk(key, alg_for(key))]}  # type: ignore[arg-type]
    except (ValueError, TypeError, SigningKeyError) as exc:
        raise _fail(f"{pem_file} is not an RSA (2048+ bits) or EC P-384 key in PEM: {exc}") from exc


def client_assertion(client_id: str, pem_file: Path, kid: str | None, audience: str) -> str:
    """A SMART client assertion (backend-services.html#authenticate-client), valid four minutes."""
    import time
    import uuid

    from .keys import SigningKey, SigningKeyError, load_private_pem

    try:
        key = SigningKey.from_private(load_private_pem(pem_file.read_bytes()))
    except OSError as exc:
        raise _fail(f"Cannot read {pem_file}: {exc.strerror}") from exc
    except SigningKeyError as exc:
        raise _fail(f"{pem_file}: {exc}") from exc
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 240,
              "jti": uuid.uuid4().hex}
    if kid and kid != key.kid:
        import jwt
        return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": kid, "typ": "JWT"})
    return key.sign(claims)


# -- dev-token --------------------------------------------------------------------------------------

def add_dev_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client", required=True, help="client id/name the token is for (a registered "
                                                        "client lends its agency and role)")
    parser.add_argument("--scope", required=True, help='SMART scopes, e.g. "user/*.rs" or "system/*.cruds"')
    parser.add_argument("--practitioner", help="Practitioner id (a user token): 123 or Practitioner/123")
    parser.add_argument("--purpose", help="purpose of use the token carries, e.g. CAREMGT (several: space-separated)")
    parser.add_argument("--agency", help="agency, e.g. la:201 (default: the registered client's)")
    parser.add_argument("--role", help="role, e.g. mash-practitioner (default: the registered client's)")
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds the token lives (default 3600)")


def run_dev_token(args: argparse.Namespace, settings: "Settings") -> int:
    """Print a development token (and nothing else, for TOKEN=$(fhir-server dev-token ...))."""
    from ..cli import say
    from .errors import AccessDenied
    from .scopes import ScopeError

    with _auth(settings) as auth:
        try:
            token = auth.mint_dev_token(client_id=args.client, scope=args.scope, practitioner=args.practitioner,
                                        purpose=args.purpose, agency=args.agency, role=args.role,
                                        lifetime=args.lifetime)
        except AccessDenied as exc:
            raise _fail(exc.diagnostics) from exc
        except (ScopeError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    say(token)
    return 0


# -- auth-key ---------------------------------------------------------------------------------------

def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev", action="store_true", help="the development issuer's keys, not the server's")
    sub = parser.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="the signing keys, newest (signing) first")
    rotate = sub.add_parser("rotate", help="add a new signing key; older keys keep verifying until removed")
    rotate.add_argument("--alg", choices=("RS384", "ES384"), default="RS384")
    remove = sub.add_parser("remove", help="remove a key: tokens it signed stop verifying")
    # a kid is a base64url thumbprint and may begin with "-": write  remove -- KID  (the list shows it so)
    remove.add_argument("kid", help='the key id (one starting with "-" goes after --: remove -- -Ab3…)')


def run_key(args: argparse.Namespace, settings: "Settings") -> int:
    from ..cli import say
    from .keys import SigningKeyError

    with _auth(settings) as auth:
        store = auth.dev_keys if args.dev else auth.server_keys
        try:
            if args.key_command == "rotate":
                key = store.rotate(args.alg)
                say(f"New {key.alg} key {key.kid} signs from now on (within {settings.auth_key_cache_seconds} s in "
                    "every worker); older keys still verify until removed.")
            elif args.key_command == "remove":
                if not store.remove(args.kid):
                    raise _fail(f"No {store.issuer} key {args.kid!r} is stored")
                say(f"Removed key {args.kid}: tokens it signed no longer verify.")
            else:
                store.ring()  # the first key, if none exists yet
                for k in store.describe():
                    say("\t".join(str(k.get(f, "")) for f in ("kid", "alg", "source", "created"))
                        + ("\tsigns" if k["signs"] else ""))
        except SigningKeyError as exc:
            raise _fail(str(exc)) from exc
    return 0
