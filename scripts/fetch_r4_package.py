"""Fetch the official FHIR R4 (4.0.1) examples package into ``.cache/`` and return its directory.

The package ``hl7.fhir.r4.examples@4.0.1`` (HL7, CC0-1.0) holds the base SearchParameters,
StructureDefinitions, CompartmentDefinitions, ValueSets, CodeSystems and several hundred example
instances. It is fetched with ``npm pack`` (the registry's ordinary client) or, where npm is absent,
with a plain HTTPS GET of the registry tarball; either way the tarball must match the sha512
integrity the npm registry publishes for that version before anything is unpacked.

Usage::

    python scripts/fetch_r4_package.py        # prints the unpacked package directory

or ``from scripts.fetch_r4_package import ensure_package``. Idempotent: a verified, unpacked cache is
reused without touching the network. ``FHIR_R4_EXAMPLES_TGZ`` may name an already-downloaded
tarball (offline machines); it is verified the same way.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "hl7.fhir.r4.examples"
VERSION = "4.0.1"
TARBALL_NAME = f"{PACKAGE}-{VERSION}.tgz"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{TARBALL_NAME}"
# `npm view hl7.fhir.r4.examples@4.0.1 dist.integrity` (pinned: a changed tarball is an error).
INTEGRITY = "sha512-DXBdIZOeQaSKIgCU7w6HOC7sw/6BzylmipLkBW4f//pT+Bc94x+8LImwTdvaNThPJoOzpBzvxAzNqjeu3X/zLw=="

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / f"{PACKAGE}-{VERSION}"
_MARKER = ".verified"


class PackageError(RuntimeError):
    """The package could not be fetched or failed verification."""


def integrity_of(path: Path) -> str:
    """The Subresource-Integrity string (``sha512-<base64>``) npm uses for tarballs."""
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def _npm_pack(dest: Path) -> Path | None:
    """``npm pack`` into ``dest``; None when npm is missing or fails (caller falls back)."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        out = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(dest)],
            check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError):
        return None
    try:
        info = json.loads(out.stdout)[0]
        if info.get("integrity") and info["integrity"] != INTEGRITY:
            raise PackageError(f"npm reports integrity {info['integrity']}, expected {INTEGRITY}")
        filename = info.get("filename") or TARBALL_NAME
    except (ValueError, IndexError, KeyError):
        filename = TARBALL_NAME
    path = dest / filename
    return path if path.exists() else None


def _https_get(dest: Path) -> Path:
    path = dest / TARBALL_NAME
    with urllib.request.urlopen(TARBALL_URL, timeout=600) as resp, path.open("wb") as fh:  # noqa: S310
        shutil.copyfileobj(resp, fh)
    return path


def _unpack(tarball: Path, target: Path) -> None:
    """Unpack into ``target`` (which then holds ``package/``), refusing unsafe member paths."""
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise PackageError(f"Refusing unsafe tar member {member.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own safety filter too
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)  # noqa: S202 - members checked above


def ensure_package(cache_dir: Path | None = None) -> Path:
    """Return the unpacked ``package/`` directory of hl7.fhir.r4.examples 4.0.1, fetching it once.

    Raises :class:`PackageError` when it cannot be fetched or its sha512 integrity does not match.
    """
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    package_dir = cache / "package"
    if (cache / _MARKER).exists() and (package_dir / "package.json").exists():
        return package_dir

    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        work = Path(tmp)
        local = os.environ.get("FHIR_R4_EXAMPLES_TGZ")
        tarball: Path | None = Path(local) if local else None
        if tarball is None:
            tarball = _npm_pack(work)
        if tarball is None:
            try:
                tarball = _https_get(work)
            except OSError as exc:
                raise PackageError(f"Could not download {TARBALL_URL}: {exc}") from exc
        actual = integrity_of(tarball)
        if actual != INTEGRITY:
            raise PackageError(f"{tarball.name}: integrity {actual} does not match {INTEGRITY}")
        unpacked = work / "unpacked"
        _unpack(tarball, unpacked)
        if not (unpacked / "package" / "package.json").exists():
            raise PackageError("Tarball has no package/package.json")
        (unpacked / _MARKER).write_text(INTEGRITY + "\n")
        shutil.copy2(tarball, unpacked / TARBALL_NAME)
        if cache.exists():
            shutil.rmtree(cache)
        unpacked.rename(cache)
    return package_dir


def main() -> int:
    try:
        print(ensure_package())
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
