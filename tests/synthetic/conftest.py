"""One generated dataset shared by the synthetic-data tests (generating is the slow part)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from synthetic import SynthConfig, generate

FAMILIES = 400
SEED = 11


@dataclass(frozen=True)
class Dataset:
    root: Path
    manifest: dict[str, Any]

    def entries(self, fmt: str | None = None) -> list[dict[str, Any]]:
        every = self.manifest["files"] + self.manifest["unmapped"]
        return [e for e in every if fmt is None or e["format"] == fmt]

    def paths(self, fmt: str) -> list[Path]:
        return [self.root / p for e in self.entries(fmt) for p in e["paths"]]

    def truth(self, name: str) -> list[dict[str, str]]:
        with (self.root / "ground_truth" / f"{name}.csv").open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("synth") / "out"
    generate(SynthConfig(families=FAMILIES, seed=SEED), root, progress=False)
    return Dataset(root, json.loads((root / "manifest.json").read_text(encoding="utf-8")))
