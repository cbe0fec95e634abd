"""The generator as a whole: deterministic, a manifest that lists exactly what was written, and an
output directory it will not mix with other content."""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import pytest

from synthetic import SynthConfig, generate
from synthetic.cli import main
from synthetic.generator import OutputNotEmpty
from synthetic.progress import Progress

from .conftest import Dataset

FORMATS = {"cin-census-xml", "ssda903-csv", "police-notifications-csv", "police-notifications-json",
           "school-census-csv", "ed-attendances-csv", "fhir-bundle", "interventions-csv"}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_gives_the_same_files_byte_for_byte(tmp_path: Path) -> None:
    cfg = SynthConfig(families=120, seed=42)
    generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b
    assert any(name.startswith("ground_truth/") for name in a)

    generate(SynthConfig(families=120, seed=43), tmp_path / "c", progress=False)
    c = _digests(tmp_path / "c")
    assert c != a


def test_a_family_is_the_same_whatever_the_run_size(tmp_path: Path) -> None:
    """Each family has its own random stream: the first families of a bigger run are the same people."""
    generate(SynthConfig(families=10, seed=9), tmp_path / "small", progress=False)
    generate(SynthConfig(families=30, seed=9), tmp_path / "big", progress=False)
    for name, varies in (("households", "practice_ods"), ("persons", "upn")):  # these depend on the run's size
        small, big = (_rows(tmp_path / run / "ground_truth" / f"{name}.csv", varies) for run in ("small", "big"))
        assert small == big[:len(small)]


def _rows(path: Path, without: str) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in (without, "in_gp_extract")} for row in csv.DictReader(f)]


def test_the_manifest_lists_every_agency_file_once(dataset: Dataset) -> None:
    listed = [p for e in dataset.entries() for p in e["paths"]]
    assert len(listed) == len(set(listed))
    on_disk = {str(p.relative_to(dataset.root)) for p in dataset.root.rglob("*")
               if p.is_file() and p.parts[len(dataset.root.parts)] not in ("ground_truth", "manifest.json")}
    assert set(listed) == on_disk
    for entry in dataset.entries():
        assert entry["format"] in FORMATS
        assert entry["agency"]["kind"] in ("local-authority", "police", "education", "health")
        assert entry["records"] > 0
    for entry in dataset.entries("ssda903-csv"):
        code = entry["agency"]["code"]
        assert entry["paths"] == [f"la/{code}_header.csv", f"la/{code}_episodes.csv", f"la/{code}_missing.csv"]
    assert dataset.manifest["ground_truth"] == "ground_truth/"
    assert {e["format"] for e in dataset.entries()} == FORMATS


def test_each_ssda903_entry_states_the_collection_year_of_the_runs_last_day(dataset: Dataset) -> None:
    """`fhir-server import --manifest` is told the year (mappings/collection_year.py): the one to the
    31 March on or after the last simulated day, the CIN census's reference date."""
    end = dt.date.fromisoformat(dataset.manifest["end_date"])
    year = end.year if end <= dt.date(end.year, 3, 31) else end.year + 1
    entries = dataset.entries("ssda903-csv")
    assert entries and all(e["collection_year"] == year for e in entries)
    assert all("collection_year" not in e for e in dataset.entries() if e["format"] != "ssda903-csv")


def test_formats_without_a_mapper_are_listed_apart(dataset: Dataset) -> None:
    from mappings.formats import available

    assert all(e["format"] in available() for e in dataset.manifest["files"])
    assert all(e["format"] not in available() for e in dataset.manifest["unmapped"])


def test_the_output_directory_is_never_mixed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate(SynthConfig(families=5, seed=1), out, progress=False)
    with pytest.raises(OutputNotEmpty):
        generate(SynthConfig(families=5, seed=1), out, progress=False)
    generate(SynthConfig(families=6, seed=2), out, progress=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["families"] == 6
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputNotEmpty, match="did not write"):
        generate(SynthConfig(families=5, seed=1), out, progress=False, overwrite=True)
    assert (out / "notes.txt").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--families", "8", "--seed", "4", "--out", str(out), "--months", "24",
                 "--start-date", "2023-01-01", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["start_date"], manifest["end_date"], manifest["months"]) == ("2023-01-01", "2024-12-31", 24)
    assert "8 families" in capsys.readouterr().out
    assert main(["--families", "8", "--out", str(out), "--quiet"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["--families", "8", "--out", str(out), "--quiet", "--force"]) == 0
    with pytest.raises(SystemExit):
        main(["--families", "0", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["--families", "3", "--start-date", "31/01/2023", "--out", str(out)])


def test_progress_goes_to_stderr_with_families_files_and_rate() -> None:
    stream = io.StringIO()
    bar = Progress(100, stream=stream, log_interval=0.0)
    bar.update(50, 103, 12)
    bar.finish(100, 205, 30)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "50/100 families" in lines[0] and "103 children" in lines[0] and "12 files" in lines[0]
    assert "families/s" in lines[1] and "done in" in lines[1]
