"""The estimators, from statsmodels: a propensity model, weighting for the effect on the treated, a
weighted regression with child-clustered standard errors, and difference-in-differences on the risk
trajectory with a pre-trend check.

- **Propensity**: logistic regression (``statsmodels`` ``Logit``) of receiving the intervention on the
  covariates; a small ridge penalty takes over when the data separate perfectly.
- **Effect on the treated (ATT)**: comparison cases weighted by the odds ``p/(1-p)`` (the treated weigh
  1), then a weighted least-squares regression of the outcome on treatment *and* the covariates
  (regression adjustment on top of weighting: right if either model is), with standard errors clustered
  by family (siblings share their risk and often their intervention; a child can also be a comparison
  case in several months).
- **Difference-in-differences**: the same weights on the monthly concern-event trajectory, six months
  before to twelve after; the effect is the treated-by-after interaction, clustered by family; the
  pre-trend check tests whether the two groups' trajectories already diverged before the index month.

Nothing here is reported when the evidence is too thin: too few treated cases, too few effective
comparison cases (Kish's effective sample size of the weights), or covariates still unbalanced after
weighting (a standardised mean difference above 0.25). The result then says so in words instead.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

MIN_TREATED = 20
MIN_EFFECTIVE_CONTROLS = 50
MAX_SMD = 0.25
PS_CLIP = (1e-4, 0.99)
UNFITTED = "The outcome model could not be fitted to these cases (no variation to learn from); no estimate is given."
LEVEL = 0.95
# An interval whose E-value is below this could be explained away by an unrecorded difference of a
# size the synthetic benchmark shows is ordinary (the early-help false harm had 1.4-1.6)
ROBUST_E_VALUE = 2.0


@dataclass
class Balance:
    covariate: str
    before: float
    after: float


@dataclass
class Effect:
    estimate: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    treated: int
    comparison: int
    effective_comparison: float
    statement: str
    balance: list[Balance] = field(default_factory=list)
    # E-values (VanderWeele & Ding 2017): how strong an unrecorded confounder would have to be, as a risk
    # ratio with both the intervention and the outcome, to explain away the estimate / its interval
    e_value: float | None = None
    e_value_ci: float | None = None

    @property
    def reported(self) -> bool:
        return self.estimate is not None

    def interval_figures(self) -> list[tuple[str, float]]:
        """(name, rounded value) of a reported effect's interval, p-value and E-values, in the order
        both outputs (Parameters parts, MeasureReport extensions) carry them; none when withheld."""
        if not self.reported:
            return []
        figures = [("ci-lower", round(self.lower, 4)), ("ci-upper", round(self.upper, 4)),
                   ("p-value", round(self.p_value, 4))]
        figures += [(name, round(value, 2)) for name, value in (("e-value", self.e_value),
                                                                ("e-value-ci", self.e_value_ci)) if value is not None]
        return figures


def propensity(treated: np.ndarray, X: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A fitted model of P(treated | X): call it with covariate rows (the study's own or new ones)."""
    keep = independent_columns(X)
    mean, sd = X[:, keep].mean(axis=0), X[:, keep].std(axis=0)

    def design(rows: np.ndarray) -> np.ndarray:
        return sm.add_constant((rows[:, keep] - mean) / sd, has_constant="add")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, PerfectSeparationWarning, RuntimeWarning))
        try:
            # Newton converges in under 10 steps unless the data (quasi-)separate; then the capped
            # fit is already at the separation limit (p ~ 0 for cases no treated case resembles)
            params = sm.Logit(treated, design(X)).fit(disp=0, maxiter=35).params
            if not np.all(np.isfinite(params)) or np.abs(params).max() > 25:
                raise np.linalg.LinAlgError("separation")
        except (np.linalg.LinAlgError, ValueError):
            params = sm.Logit(treated, design(X)).fit_regularized(alpha=1.0, disp=0, maxiter=500).params

    def predict(rows: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(design(rows) @ params)))

    return predict


def independent_columns(X: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Which columns to fit on: no constant column, none that the earlier-listed ones already determine
    (in a small population an indicator can equal a count's transform, and a fit's Hessian is then
    singular). Greedy: a column is kept when it raises the rank of those kept before it."""
    keep = np.zeros(X.shape[1], dtype=bool)
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    rank = 0
    for j in np.nonzero(sd > 0)[0]:
        keep[j] = True
        if np.linalg.matrix_rank(Z[:, keep], tol=tol * np.sqrt(len(Z))) > rank:
            rank += 1
        else:
            keep[j] = False
    return keep


def att_weights(treated: np.ndarray, ps: np.ndarray) -> np.ndarray:
    p = np.clip(ps, *PS_CLIP)
    return np.where(treated == 1, 1.0, p / (1.0 - p))


def effective_size(weights: np.ndarray) -> float:
    total = weights.sum()
    return float(total * total / (weights * weights).sum()) if total > 0 else 0.0


def standardised_differences(X: np.ndarray, treated: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMD of each covariate, unweighted and weighted (pooled SD of the unweighted groups)."""
    t, c = treated == 1, treated == 0
    sd = np.sqrt((X[t].var(axis=0) + X[c].var(axis=0)) / 2.0)
    sd = np.where(sd > 0, sd, 1.0)
    before = (X[t].mean(axis=0) - X[c].mean(axis=0)) / sd
    after = (np.average(X[t], axis=0, weights=weights[t]) - np.average(X[c], axis=0, weights=weights[c])) / sd
    return before, after


def att(y: np.ndarray, treated: np.ndarray, X: np.ndarray, weights: np.ndarray, clusters: np.ndarray,
        names: tuple[str, ...], *, unit: str = "", binary: bool = False) -> Effect:
    """The effect on the treated of one outcome, or a plain statement of why there is none. With each
    estimate its E-values: for a ``binary`` outcome from the risk ratio (the treated's risk against
    their risk without it, that risk less the estimated difference), otherwise from the standardised
    difference (RR ~ exp(0.91 d), VanderWeele & Ding 2017)."""
    n_t, n_c = int(treated.sum()), int((treated == 0).sum())
    eff = effective_size(weights[treated == 0])
    before, after = standardised_differences(X, treated, weights) if n_t and n_c else (np.zeros(len(names)),) * 2
    balance = [Balance(n, float(b), float(a)) for n, b, a in zip(names, before, after)]
    thin = _thin(n_t, eff, balance)
    if thin:
        return Effect(None, None, None, None, n_t, n_c, eff, thin, balance)
    keep = independent_columns(X)
    design = sm.add_constant(np.column_stack([treated, X[:, keep]]), has_constant="add")
    fit = sm.WLS(y, design, weights=weights).fit(method="qr", cov_type="cluster", cov_kwds={"groups": clusters})
    estimate = float(fit.params[1])
    lower, upper = (float(v) for v in fit.conf_int(alpha=1 - LEVEL)[1])
    p = float(fit.pvalues[1])
    if not all(np.isfinite(v) for v in (estimate, lower, upper, p)):
        return Effect(None, None, None, None, n_t, n_c, eff, UNFITTED, balance)
    e_point, e_ci = e_values(estimate, lower, upper, y, treated, weights, binary=binary)
    return Effect(estimate, lower, upper, p, n_t, n_c, eff, _describe(estimate, lower, upper, p, unit, e_ci),
                  balance, e_point, e_ci)


def e_value(rr: float) -> float:
    """VanderWeele & Ding's E-value of a risk ratio: the minimum strength of association, on the
    risk-ratio scale, that an unmeasured confounder would need with both the treatment and the
    outcome to fully explain the ratio away (Ann Intern Med 2017;167:268)."""
    rr = 1.0 / rr if rr < 1 else rr
    return float(rr + np.sqrt(rr * (rr - 1.0)))


def e_values(estimate: float, lower: float, upper: float, y: np.ndarray, treated: np.ndarray, weights: np.ndarray,
             *, binary: bool) -> tuple[float | None, float | None]:
    """(E-value of the estimate, E-value of the interval's limit nearest no effect: 1 when the
    interval includes no effect)."""
    t, c = treated == 1, treated == 0
    if binary:
        risk = float(y[t].mean())  # the treated's observed risk; without it: that less the difference

        def ratio(diff: float) -> float | None:
            without = risk - diff
            return risk / without if risk > 0 and without > 0 else None
    else:
        spread = float(np.sqrt(np.average((y[c] - np.average(y[c], weights=weights[c])) ** 2, weights=weights[c])))

        def ratio(diff: float) -> float | None:
            return float(np.exp(0.91 * diff / spread)) if spread > 0 else None
    point = ratio(estimate)
    if point is None:
        return None, None
    if lower <= 0 <= upper:
        return e_value(point), 1.0
    nearest = ratio(lower if estimate > 0 else upper)
    return e_value(point), (e_value(nearest) if nearest is not None else None)


def _thin(n_treated: int, effective: float, balance: list[Balance]) -> str:
    if n_treated < MIN_TREATED:
        return (f"Too few comparable cases to say anything: {n_treated} children received it "
                f"(at least {MIN_TREATED} are needed).")
    if effective < MIN_EFFECTIVE_CONTROLS:
        return (f"Too few comparable children who did not receive it: an effective {effective:.0f} after weighting "
                f"(at least {MIN_EFFECTIVE_CONTROLS} are needed).")
    worst = max(balance, key=lambda b: abs(b.after))
    if abs(worst.after) > MAX_SMD:
        return (f"The children who received it still differ from the comparison group after weighting "
                f"({worst.covariate}: standardised difference {worst.after:+.2f}); no estimate is given.")
    return ""


def _describe(estimate: float, lower: float, upper: float, p: float, unit: str, e_ci: float | None = None) -> str:
    span = f"{estimate:+.3f}{unit} (95% interval {lower:+.3f} to {upper:+.3f})"
    if lower > 0 or upper < 0:
        direction = "higher" if estimate > 0 else "lower"
        if e_ci is not None and e_ci < ROBUST_E_VALUE:
            return (f"{span}: the interval excludes no effect, but not robustly: a difference between the groups that "
                    f"the records do not show, associated with both receiving it and the outcome by a risk ratio of "
                    f"{e_ci:.2f} (the E-value of the interval), would be enough to explain it away. Differences of "
                    f"that size are common when help is offered on what workers know and the records do not yet "
                    f"show; do not read it as {'harm' if estimate > 0 else 'benefit'} without other evidence.")
        return f"{span}: {direction} than without it; the interval excludes no effect."
    return f"{span}: the interval includes no effect, so the data cannot tell whether it helps."


CHECK_ALPHA = 0.05


@dataclass
class SelectionCheck:
    """The first-month check: the weighted difference in concern events in the month the intervention
    started, a month no intervention can yet have changed much. The covariates already balance
    everything recorded up to the offer; a difference left in the very next month means the children
    were offered help on a risk their records did not (yet) show, and that same hidden risk biases
    every later outcome (towards harm when the riskier children are the ones helped)."""

    effect: Effect
    passed: bool | None  # None: it could not be made
    statement: str


def first_month_check(y: np.ndarray, treated: np.ndarray, X: np.ndarray, weights: np.ndarray, clusters: np.ndarray,
                      names: tuple[str, ...]) -> SelectionCheck:
    """A negative-control outcome (Lipsitch, Tchetgen Tchetgen & Cohen 2010): the outcome the
    intervention cannot have caused, estimated exactly as the real ones are."""
    effect = att(y, treated, X, weights, clusters, names, unit=" concern events in the first month")
    if not effect.reported:
        return SelectionCheck(effect, None, "The first-month check could not be made: " + effect.statement)
    span = f"{effect.estimate:+.3f} (95% interval {effect.lower:+.3f} to {effect.upper:+.3f}, p = {effect.p_value:.3f})"
    if effect.p_value < CHECK_ALPHA:
        side = "more" if effect.estimate > 0 else "fewer"
        return _check(effect, False, (
            f"First-month check failed: in the month it started, too early for it to have worked, the children who "
            f"received it already had {side} concern events than their weighted comparisons ({span} a month). They "
            f"were chosen on a risk their records did not show, and that hidden difference biases every outcome "
            f"below, so no estimate is given."))
    return _check(effect, True, (
        f"First-month check passed: in the month it started the two groups had similar concern events ({span} a "
        f"month). This does not prove there is no hidden difference, only that none showed in that month."))


def _check(effect: Effect, passed: bool, statement: str) -> SelectionCheck:
    """The check's figures speak of a difference, not of an effect: its own sentence, no E-values."""
    return SelectionCheck(replace(effect, statement=statement, e_value=None, e_value_ci=None), passed, statement)


def withheld(effect: Effect, check: SelectionCheck) -> Effect:
    """``effect`` as it must be reported after ``check``: unchanged when the check passed or could not
    be made, without its figures (counts, balance and the reason kept) when it failed."""
    if check.passed is not False or not effect.reported:
        return effect
    return Effect(None, None, None, None, effect.treated, effect.comparison, effect.effective_comparison,
                  check.statement, effect.balance)


@dataclass
class DiD:
    effect: Effect
    pre_trend_p: float | None
    pre_trend_statement: str
    offsets: list[int]
    treated_means: list[float | None]
    comparison_means: list[float | None]


def difference_in_differences(values: np.ndarray, observed: np.ndarray, offsets: np.ndarray, treated: np.ndarray,
                              weights: np.ndarray, clusters: np.ndarray, X: np.ndarray,
                              names: tuple[str, ...]) -> DiD:
    """Treated-by-after on the monthly trajectory (offsets < 0 are before the index month).

    Each case's months are averaged before and after the index month (two rows a case: the classic
    two-period form, so the regression has 2 rows per case rather than 18), and the pre-trend check
    compares the cases' own least-squares slopes over the months before."""
    case, k = np.nonzero(observed)
    means_t, means_c = _means(values[case, k], treated[case], weights[case], offsets[k], offsets)
    n_t, n_c = int(treated.sum()), int((treated == 0).sum())
    eff = effective_size(weights[treated == 0])
    before, after = standardised_differences(X, treated, weights) if n_t and n_c else (np.zeros(len(names)),) * 2
    balance = [Balance(n, float(b), float(a)) for n, b, a in zip(names, before, after)]
    thin = _thin(n_t, eff, balance)
    if thin:
        return DiD(Effect(None, None, None, None, n_t, n_c, eff, thin, balance), None,
                   "No pre-trend check without an estimate.", offsets.tolist(), means_t, means_c)
    pre_mask, post_mask = observed & (offsets < 0)[None, :], observed & (offsets >= 0)[None, :]
    n_pre, n_post = pre_mask.sum(axis=1), post_mask.sum(axis=1)
    both = (n_pre > 0) & (n_post > 0)
    pre_mean = np.where(pre_mask, values, 0).sum(axis=1)[both] / n_pre[both]
    post_mean = np.where(post_mask, values, 0).sum(axis=1)[both] / n_post[both]
    t, w, g = treated[both], weights[both], clusters[both]
    y = np.concatenate([pre_mean, post_mean])
    post = np.concatenate([np.zeros(len(t)), np.ones(len(t))])
    tt = np.concatenate([t, t])
    design = sm.add_constant(np.column_stack([tt, post, tt * post]), has_constant="add")
    fit = sm.WLS(y, design, weights=np.concatenate([w, w])).fit(
        method="qr", cov_type="cluster", cov_kwds={"groups": np.concatenate([g, g])})
    estimate = float(fit.params[3])
    lower, upper = (float(v) for v in fit.conf_int(alpha=1 - LEVEL)[3])
    p = float(fit.pvalues[3])
    if not all(np.isfinite(v) for v in (estimate, lower, upper, p)):
        return DiD(Effect(None, None, None, None, n_t, n_c, eff, UNFITTED, balance), None,
                   "No pre-trend check without an estimate.", offsets.tolist(), means_t, means_c)
    effect = Effect(estimate, lower, upper, p, n_t, n_c, eff,
                    _describe(estimate, lower, upper, p, " concern events a month"), balance)
    pre_p, slope = _pre_trend(values, pre_mask, offsets, treated, weights, clusters)
    if pre_p is None:
        return DiD(effect, None, "The pre-trend could not be checked (no variation before the index month).",
                   offsets.tolist(), means_t, means_c)
    if pre_p < 0.05:
        statement = (f"Pre-trend check failed: before the index month the treated children's concern rate already "
                     f"moved differently ({slope:+.3f} a month, p = {pre_p:.3f}); treat the estimate with caution.")
    else:
        statement = (f"Pre-trend check passed: no evidence the groups diverged before the index month "
                     f"(difference in slope {slope:+.3f} a month, p = {pre_p:.2f}).")
    return DiD(effect, pre_p, statement, offsets.tolist(), means_t, means_c)


def _pre_trend(values: np.ndarray, pre_mask: np.ndarray, offsets: np.ndarray, treated: np.ndarray,
               weights: np.ndarray, clusters: np.ndarray) -> tuple[float | None, float]:
    """Each case's least-squares slope of the monthly rate over its months before the index, then the
    weighted difference between the groups' slopes, clustered by family: (p-value, difference)."""
    k = np.where(pre_mask, offsets[None, :], 0).astype(float)
    n = pre_mask.sum(axis=1)
    enough = n >= 3
    if not enough.any():
        return None, 0.0
    mean_k = k.sum(axis=1)[enough] / n[enough]
    mean_y = np.where(pre_mask, values, 0).sum(axis=1)[enough] / n[enough]
    dk = np.where(pre_mask[enough], k[enough] - mean_k[:, None], 0)
    dy = np.where(pre_mask[enough], values[enough] - mean_y[:, None], 0)
    slopes = (dk * dy).sum(axis=1) / (dk * dk).sum(axis=1)
    t = treated[enough]
    if t.min() == t.max():
        return None, 0.0
    fit = sm.WLS(slopes, sm.add_constant(t, has_constant="add"), weights=weights[enough]).fit(
        method="qr", cov_type="cluster", cov_kwds={"groups": clusters[enough]})
    p = float(fit.pvalues[1])
    return (p if np.isfinite(p) else None), float(fit.params[1])


def _means(y: np.ndarray, t: np.ndarray, w: np.ndarray, rel: np.ndarray,
           offsets: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Weighted mean of ``y`` at each offset, for the treated and the comparison group."""
    slot = (rel - offsets[0]) * 2 + t.astype(int)
    size = len(offsets) * 2
    sums = np.bincount(slot, weights=w * y, minlength=size)
    totals = np.bincount(slot, weights=w, minlength=size)
    means = [float(s_) / float(n) if n > 0 else None for s_, n in zip(sums, totals)]
    return means[1::2], means[0::2]
