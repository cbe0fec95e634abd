"""The generator: families one at a time, from household to agency files and ground truth.

Memory stays flat: a family is built, simulated, written and dropped before the next; only the open
file handles and the identifier counters (a few per organisation) persist. Each family draws from its
own random stream (seeded by the run seed and the family number), so the same seed gives the same
files byte for byte.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from mappings import collection_year, formats

from .calendar import Calendar
from .config import SynthConfig
from .ground_truth import GroundTruth
from .households import HouseholdBuilder
from .identifiers import NhsNumbers, Upns
from .progress import Progress
from .story import Ids, Story
from .trajectories import Draws, Timeline, assign_profile, simulate
from .world import FORCES, World
from .writers.base import Outputs
from .writers.cin_census import CinCensusWriter
from .writers.ed_attendances import EdAttendancesWriter
from .writers.fhir import BundleFiles
from .writers.gp_extract import GpExtractWriter
from .writers.interventions import InterventionsWriter
from .writers.police import PoliceWriter
from .writers.school_census import SchoolCensusWriter
from .writers.ssda903 import Ssda903Writer

MANIFEST = "manifest.json"
OWN_ENTRIES = ("la", "police", "education", "health", "ground_truth", MANIFEST)


class OutputNotEmpty(Exception):
    """The output directory holds other files; pass overwrite=True to replace a previous dataset."""


@dataclass
class RunSummary:
    families: int
    children: int
    adults: int
    files: int
    agency_records: int
    ground_truth_records: int
    seconds: float
    peak_rss_mb: float

    def line(self) -> str:
        return (f"{self.families:,} families, {self.children:,} children, {self.adults:,} adults → {self.files} "
                f"agency files ({self.agency_records:,} records) in {self.seconds:.1f} s; "
                f"peak RSS {self.peak_rss_mb:.0f} MB")


def prepare(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready: refuse to mix with other content unless told to replace our own."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputNotEmpty(f"{out} is not empty (use --force to replace a generated dataset there)")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_ENTRIES)
        if foreign:
            raise OutputNotEmpty(f"{out} holds files the generator did not write ({', '.join(foreign[:5])}); "
                                 "choose an empty directory")
        for name in OWN_ENTRIES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(cfg: SynthConfig, out: Path, *, progress: bool = True, stream: TextIO | None = None,
             overwrite: bool = False) -> RunSummary:
    """Write the agency files, ``manifest.json`` and ``ground_truth/`` for ``cfg`` into ``out``."""
    started = time.monotonic()
    prepare(out, overwrite=overwrite)
    world = World(cfg.families, gp_extract_share=cfg.gp_extract_share)
    cal = Calendar(cfg.start_date, cfg.months)
    builder = HouseholdBuilder(cfg, world, NhsNumbers(cfg.seed), Upns())
    ids = Ids()
    outputs = Outputs(out)
    truth = GroundTruth(out / "ground_truth", cfg, cal)
    bundles = BundleFiles(outputs, seed=cfg.seed, max_patients=cfg.bundle_max_patients,
                          timestamp=f"{(cal.end + dt.timedelta(days=1)).isoformat()}T02:00:00+00:00")
    writers = [CinCensusWriter(outputs, reference_date=cal.end), Ssda903Writer(outputs, collection_year=collection_year.containing(cal.end)),
               InterventionsWriter(outputs),
               PoliceWriter(outputs, json_forces={f.code for f in FORCES.values() if f.file_format == "json"}),
               SchoolCensusWriter(outputs), EdAttendancesWriter(outputs), GpExtractWriter(outputs, bundles)]
    bar = Progress(cfg.families, stream=stream, enabled=progress)
    children = adults = 0
    try:
        for index in range(cfg.families):
            rng = random.Random(f"{cfg.seed}/family/{index}")
            family = builder.build(index, rng)
            profile = assign_profile(family, cal.months, rng, builder.add_partner)
            draws = Draws(rng, family, cal.months, len(cal.terms))
            timeline = simulate(family, profile, draws, cal)
            counterfactual = None
            without_episode: dict[int, Timeline] = {}
            if cfg.counterfactual and any(i.accepted for i in timeline.interventions):
                counterfactual = simulate(family, profile, draws, cal, schedule=timeline.interventions,
                                          effects=False)
                # each episode's own effect: the same run with only that episode doing nothing
                without_episode = {i.number: simulate(family, profile, draws, cal, schedule=timeline.interventions,
                                                      without=frozenset({i.number}))
                                   for i in timeline.interventions if i.accepted and i.start_month < cal.months}
            story = Story(cfg, world, cal, family, profile, timeline, random.Random(f"{cfg.seed}/records/{index}"),
                          ids, truth)
            for writer in writers:
                writer.write(story)
            truth.family(story, counterfactual, without_episode)
            children += len(family.children)
            adults += len(family.adults)
            bar.update(index + 1, children, outputs.files_written)
    finally:
        outputs.close()
        truth.close()
    bar.finish(cfg.families, children, outputs.files_written)
    entries = outputs.manifest()
    known = set(formats.available())
    manifest = {
        "generator": "synthetic", "version": 1, "seed": cfg.seed, "families": cfg.families,
        "start_date": cal.start.isoformat(), "end_date": cal.end.isoformat(), "months": cfg.months,
        "ground_truth": "ground_truth/",
        "files": [e for e in entries if e["format"] in known],
        # formats no mapper reads (none today): listed apart so that
        # `fhir-server import --manifest` loads what it can
        "unmapped": [e for e in entries if e["format"] not in known],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    summary = RunSummary(cfg.families, children, adults, outputs.files_written,
                         sum(e.records for e in outputs.entries.values()), truth.rows["records"],
                         time.monotonic() - started, peak_rss_mb())
    (out / "ground_truth" / "summary.json").write_text(
        json.dumps({**asdict(summary), "seconds": None, "peak_rss_mb": None, "rows": truth.rows}, indent=2) + "\n",
        encoding="utf-8")
    return summary


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
