"""How well does the risk score (triage/) pick out the children who escalate? Measured on synthetic data.

For a loaded database (generator files imported, the outbox drained so that linkage has made one child
of each child's agency records — ``bench/impact_eval.py --keep`` leaves such databases), the script
scores every child **as of** a series of cut-off dates with the server's own model (``triage.model
.score_child``) on the evidence known by then (Observations dated on or before the cut-off, episodes
started by then, open if they had not ended by then), and asks whether the child had a **first child
protection plan in the 6 months after** (children already on a plan or looked after at the cut-off are
left out: they have escalated already). It prints, pooled over the cut-offs:

- the AUC (the probability that a child who escalated scored higher than one who did not; from the
  Mann-Whitney U statistic of ``scipy.stats``);
- the precision of the red band (the share of red children who escalated) and its recall (the share
  of children who escalated that were red), the same for red or amber, and the base rate.

    python bench/triage_auc.py --url postgresql://postgres@127.0.0.1:5432/bench_impact_eval_1

A score is a ranking for attention, never a prediction for one child: read the precision as "of the
children shown red, this share went on to a plan", which is what a worker needs to know.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

HORIZON_DAYS = 183  # "within 6 months"
CP_PLAN, LOOKED_AFTER = "cp-plan", "looked-after"


def as_of(child, cutoff: datetime):
    """The child's model input as it stood at ``cutoff``: later evidence and episodes removed, episodes
    open then marked open (an episode finished since was still running)."""
    def then(ep):
        if ep.start is not None and ep.start > cutoff:
            return None
        return dataclasses.replace(ep, open=ep.end is None or ep.end > cutoff,
                                   end=ep.end if ep.end is not None and ep.end <= cutoff else None)

    episodes = [e for e in map(then, child.episodes) if e is not None]
    siblings = [e for e in map(then, child.sibling_episodes) if e is not None]
    evidence = [e for e in child.evidence if e.when is not None and e.when <= cutoff]
    return dataclasses.replace(child, evidence=evidence, episodes=episodes, sibling_episodes=siblings)


def escalated(child, cutoff: datetime) -> bool | None:
    """True: a first plan started within the horizon after ``cutoff``; None: already on a plan or looked
    after then (or a plan before), so not a child the question is about."""
    plans = [e.start for e in child.episodes if e.code == CP_PLAN and e.start is not None]
    if any(p <= cutoff for p in plans):
        return None
    if any(e.code == LOOKED_AFTER and e.start is not None and e.start <= cutoff
           and (e.end is None or e.end > cutoff) for e in child.episodes):
        return None
    return any(cutoff < p <= cutoff + timedelta(days=HORIZON_DAYS) for p in plans)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a loaded, drained database (SQLAlchemy URL)")
    parser.add_argument("--first", default="2023-01-01", help="first cut-off (default 2023-01-01)")
    parser.add_argument("--every", type=int, default=3, help="months between cut-offs (default 3)")
    parser.add_argument("--last", default=None, help="last cut-off (default: 6 months before the last plan)")
    args = parser.parse_args(argv)

    import numpy as np
    from scipy.stats import mannwhitneyu
    from sqlalchemy import create_engine

    from fhir_server.config import Settings
    from triage import store
    from triage.config import load_config
    from triage.model import score_child

    settings = Settings(database_url=args.url)
    config = load_config(Path(settings.profiles_dir))
    engine = create_engine(args.url.replace("postgresql://", "postgresql+psycopg://", 1))
    print(harness.machine_summary())
    with engine.connect() as conn:
        children = store.all_children(conn, settings.base_url)
        inputs, _authority = store.load_inputs(conn, children, settings.base_url, datetime.now())
    starts = [e.start for c in inputs.values() for e in c.episodes if e.code == CP_PLAN and e.start]
    last = (datetime.fromisoformat(args.last) if args.last
            else max(starts) - timedelta(days=HORIZON_DAYS)) if starts else None
    cutoff, cutoffs = datetime.fromisoformat(args.first), []
    while last is not None and cutoff <= last:
        cutoffs.append(cutoff)
        month = cutoff.month - 1 + args.every
        cutoff = cutoff.replace(year=cutoff.year + month // 12, month=month % 12 + 1)
    scores, bands, outcome = [], [], []
    for cut in cutoffs:
        for child in inputs.values():
            if child.birth_date is not None and not (cut.date() - timedelta(days=18 * 365) < child.birth_date
                                                     <= cut.date()):
                continue  # not a child (yet, or any more) at the cut-off
            went = escalated(child, cut)
            if went is None:
                continue
            result = score_child(as_of(child, cut), config, cut)
            scores.append(result.score)
            bands.append(result.band)
            outcome.append(went)
    y, s, b = np.array(outcome), np.array(scores), np.array(bands)
    if not y.any() or y.all():
        print("No escalations (or nothing but) among the children scored: nothing to measure.")
        return 1
    u = mannwhitneyu(s[y], s[~y]).statistic
    auc = float(u) / (y.sum() * (~y).sum())
    rows = [("children x cut-offs scored", f"{len(y):,}"), ("cut-offs", f"{cutoffs[0]:%Y-%m} to {cutoffs[-1]:%Y-%m}, "
                                                            f"every {args.every} months ({len(cutoffs)})"),
            ("escalated (first CP plan within 6 months)", f"{int(y.sum()):,} ({y.mean():.2%}, the base rate)"),
            ("AUC of the score", f"{auc:.3f}")]
    for name, picked in (("red", b == "red"), ("red or amber", np.isin(b, ("red", "amber")))):
        precision = y[picked].mean() if picked.any() else float("nan")
        recall = picked[y].mean()
        rows.append((f"{name}: children flagged", f"{int(picked.sum()):,} ({picked.mean():.2%})"))
        rows.append((f"{name}: precision (flagged who escalated)", f"{precision:.3f}"))
        rows.append((f"{name}: recall (escalated who were flagged)", f"{recall:.3f}"))
    harness.print_table(f"Risk score against a first child protection plan within 6 months ({config.label})",
                        ("measure", "value"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
