"""IRD: iterative search for a (sample set, parameter set) pair behind a FISH mask.

Design note. IRD (Dong, Xue, Zheng & He, 2024, "Data-oriented Dynamic Fine-tuning
Parameter Selection Strategy for FISH Mask based Efficient Fine-tuning") argues that FISH
picks its Fisher samples at random and weighs them equally, which fails on uneven data,
and searches in rounds for a better pair: each round keeps the samples and the parameters
with larger Fisher information, shrinking both ranges. No public code exists and the
paper's algorithm box was not available to us: this module is OUR RECONSTRUCTION, and
every default and every choice listed below is ours, not the paper's.

Algorithm (g_ij: example i's Fisher contribution to entry j, `fishjax.selection.fisher`; the
params are fixed throughout: pretrained encoder + freshly initialised head, no training
between rounds):
  S_0: a seeded random pool of N0 training examples (`pool_size`; sorted ids; the whole
  set if it is smaller); P_0: every eligible entry (as in FISH; the head is trained fully
  by the method and never ranked); k: the mask size. Round t:
  1. s_i = sum_{j in P_t} g_ij for i in S_t (`sample_ranking="range"`), or over P_0
     (`"all"`, a variant);
  2. S_{t+1} = the top max(min(N_min, |S_t|), ceil(a_s |S_t|)) of S_t by s_i;
  3. F_j = sum_{i in S_{t+1}} g_ij; P_{t+1} = the top max(k, ceil(a_p |P_t|)) entries
     of P_t by F (entries outside P_t never re-enter);
  4. candidate_t = (S_{t+1}, top-k of P_{t+1} by F) — equal to the top-k of P_t by F,
     the ranges being nested prefixes of one stable order;
  5. stop when |P_{t+1}| = k and |S_{t+1}| = N_min, at a fixed point (S and P both
     unchanged: every later round would repeat it exactly), or after T = `max_rounds`
     rounds. With `schedule` (a variant), round t uses the t-th (samples, params) sizes
     instead of steps 2-3's geometric sizes, and the schedule's length is the number
     of rounds.
  The final pair is the last round's candidate (`final="last"`, the default), or, as an
  explicitly labelled option, `final="best_dev"`: every distinct candidate is scored by a
  caller-supplied `candidate_score(mask)` (the `ird` method: a short masked training run
  from the pretrained params, then the dev set's main metric) and the best one is kept
  (ties: the earliest round). That option selects on the dev set, so the dev score of the
  run that follows is optimistically biased; the trace says so and records every score.

Passes, exactly (the N x P matrix g_ij is never formed;
`fishjax.selection.fisher.fisher_pass`, the one Fisher engine, reduces each example's
squared-gradient tree on the fly to a masked per-example mass and/or per-parameter sums):
- ranking pass over S_t (|S_t| examples): the masses s_i (and, at no extra backward
  cost, F over S_t, which in round 0 is FISH's score on the pool: the trace compares
  every candidate with FISH's mask on the same pool);
- scoring pass over S_{t+1} (|S_{t+1}| examples): F.
  Step 3 needs S_{t+1}, known only once every s_i of round t is, so F cannot come from
  the ranking pass: subtracting the dropped samples' sums would not be exact in floating
  point, and keeping per-sample sums is the N x P matrix. Hence two passes per round in
  general, with these exact savings (same samples, same mask, fixed params: the same
  numbers):
- no ranking pass when nothing is dropped (|S_{t+1}| = |S_t|), nor when the masses over
  the ranking mask are already known: with `"all"` they are computed once, in round 0;
  with `"range"` they are reused once P has stopped changing (|P| = k).
- no scoring pass when F over exactly S_{t+1} is already known (S did not change: at the
  floor N_min, or a_s = 1): those rounds cost nothing and shrink P by the same F.
  Fusing round t's scoring pass with round t+1's ranking pass would need the masses over
  P_{t+1}, which depends on that very pass's F: not exact under `"range"`, so not done.
  Cost with the defaults (N0 = 1024, a_s = a_p = 0.5, N_min = 32, T = 8; P still larger
  than k when S reaches the floor, as for any real model where |P_0| / k ~ 200):
  `"range"`: ranking 1024+512+256+128+64 = 1984, scoring 512+256+128+64+32 = 992, i.e.
  2976 backward passes = 2.9x FISH's 1024 (fisher.num_samples); `"all"`: 1024 + 992 =
  2016 = 2.0x. (`mode="expected"` multiplies both by its passes per example.) With
  a_s = 1 IRD spends exactly FISH's N0 and returns FISH's mask on the pool; with
  a_s = a_p = 1 it stops after one round with that mask (the acceptance test checks it
  bitwise).

Other choices of ours: samples are kept or dropped (0/1), not re-weighted; ties go to
the lower example id (samples) and to the first entry in tree-flatten order (params,
`fishjax.selection.topk.top_k_mask`'s stable order), so the same seed and pool give the
same result; ceil(a n) is taken after rounding a n to 9 decimals (0.7 * 10 is 7, not 8).
Ranking by gradient mass can favour odd, long or mislabelled examples; the trace shows
each round's kept label counts, mean length and largest-mass examples.

The jitted step is the per-example Fisher pass (cached: rounds and batch shapes of the
same kind never recompile); the selection steps are small pure numpy functions over id
arrays and bool mask trees (exact, stably sorted), driven by `run_ird`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from fishjax.core.errors import IRDError
from fishjax.core.tree import PyTree, count_true
from fishjax.data import TokenizedSplit, index_batches
from fishjax.objectives import Objective, SequenceClassification
from fishjax.selection.fisher import LossFn, backward_passes_per_example, fisher_pass
from fishjax.selection.per_example import resolve_eligible
from fishjax.selection.topk import top_k_in_range, top_k_mask

log = logging.getLogger("fishjax")

SAMPLE_RANKINGS = ("range", "all")
FINALS = ("last", "best_dev")
Batch = dict[str, Any]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _check_size(x: Any) -> bool:
    """A schedule size: an int >= 1 (a count) or a float in (0, 1] (a fraction)."""
    if _is_int(x):
        return x >= 1
    return isinstance(x, float | np.floating) and 0.0 < x <= 1.0


@dataclasses.dataclass(frozen=True)
class IRDOptions:
    """IRD's options (`config.method.ird`); see the module docstring."""

    pool_size: int = 1024  # N0
    sample_shrink: float = 0.5  # a_s
    param_shrink: float = 0.5  # a_p
    min_samples: int = 32  # N_min
    max_rounds: int = 8  # T
    sample_ranking: str = "range"  # "range" | "all"
    schedule: tuple = ()  # ((samples, params), ...); empty: geometric
    final: str = "last"  # "last" | "best_dev" (needs run_ird's candidate_score)
    best_dev_steps: int = 50  # best_dev: training steps per candidate (used by the caller)

    def __post_init__(self):
        for name in ("pool_size", "min_samples", "max_rounds", "best_dev_steps"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise IRDError(f"must be an int >= 1, got {v!r}", name)
        for name in ("sample_shrink", "param_shrink"):
            v = getattr(self, name)
            if not _is_real(v) or not 0.0 < v <= 1.0:
                raise IRDError(f"must be in (0, 1], got {v!r}", name)
        if self.sample_ranking not in SAMPLE_RANKINGS:
            raise IRDError(f"must be one of {SAMPLE_RANKINGS}, got {self.sample_ranking!r}",
                           "sample_ranking")
        if self.final not in FINALS:
            raise IRDError(f"must be one of {FINALS}, got {self.final!r}", "final")
        try:
            schedule = tuple(tuple(pair) for pair in self.schedule)
        except TypeError:
            schedule = None
        if schedule is None or not all(len(p) == 2 and all(map(_check_size, p))
                                       for p in schedule):
            raise IRDError("must be a sequence of (samples, params) pairs, each an int >= 1 "
                           f"(a count) or a float in (0, 1] (a fraction); got {self.schedule!r}",
                           "schedule")
        object.__setattr__(self, "schedule", schedule)

    @classmethod
    def from_config(cls, cfg: Any) -> IRDOptions:
        """From `config.method.ird` (a ConfigDict or mapping); unknown keys are an error."""
        values = dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise IRDError(f"unknown option(s) {unknown}; known: {sorted(names)}", unknown[0])
        return cls(**values)


# -- samples ---------------------------------------------------------------------------


def draw_pool(num_examples: int, pool_size: int, seed: int) -> np.ndarray:
    """S_0: `pool_size` distinct example ids drawn with `default_rng(seed)`, sorted."""
    if num_examples <= 0:
        raise IRDError("the training set is empty")
    if pool_size >= num_examples:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_examples, size=pool_size, replace=False)).astype(np.int64)


def keep_top_samples(ids: np.ndarray, mass: np.ndarray, n: int) -> np.ndarray:
    """The `n` ids with the largest mass (ties: lower id first), sorted ascending."""
    ids, mass = np.asarray(ids), np.asarray(mass)
    if np.isnan(mass).any():
        raise IRDError("per-example Fisher mass is NaN")
    order = np.argsort(ids, kind="stable")
    ids, mass = ids[order], mass[order]
    return np.sort(ids[np.argsort(-mass, kind="stable")[:n]])


def _lookup(ids: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    """values at `wanted` (ids ascending), or None if some wanted id is missing."""
    pos = np.searchsorted(ids, wanted)
    if np.any(pos >= len(ids)) or not np.array_equal(ids[np.minimum(pos, len(ids) - 1)],
                                                     wanted):
        return None
    return values[pos]


# -- parameter ranges (bool trees shaped like the params) --------------------------------


def initial_range(params: PyTree, eligible: PyTree) -> PyTree:
    """P_0: every entry of every eligible leaf."""
    return jax.tree_util.tree_map(lambda p, e: np.full(np.shape(p), bool(e)), params, eligible)


def _masked_sum(scores: PyTree, mask: PyTree) -> float:
    return float(sum(np.sum(np.asarray(s, np.float64)[np.asarray(m)]) for s, m in zip(
        jax.tree_util.tree_leaves(scores), jax.tree_util.tree_leaves(mask), strict=True)))


def _overlap(a: PyTree, b: PyTree) -> int:
    return int(sum(np.count_nonzero(x & y) for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)))


def _same_mask(a: PyTree, b: PyTree) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


# -- sizes -----------------------------------------------------------------------------


def _ceil_frac(a: float, n: int) -> int:
    return int(math.ceil(round(a * n, 9)))


def resolve_schedule(schedule: Sequence, n0: int, p0: int) -> list[tuple[int, int]]:
    """Absolute (samples, params) sizes: an int is a count, a float a fraction of N0 / |P_0|.

    Raises IRDError unless both sequences are non-increasing.
    """
    out = [(s if _is_int(s) else _ceil_frac(s, n0), p if _is_int(p) else _ceil_frac(p, p0))
           for s, p in schedule]
    for (s0, q0), (s1, q1) in zip(out, out[1:], strict=False):
        if s1 > s0 or q1 > q0:
            raise IRDError(f"sizes must not grow from round to round, got {out}", "schedule")
    return out


def next_sizes(t: int, n: int, m: int, k: int, options: IRDOptions,
               schedule: list[tuple[int, int]]) -> tuple[int, int]:
    """(|S_{t+1}|, |P_{t+1}|) from |S_t| = n and |P_t| = m; never above n, m; P never below k."""
    if schedule:
        s, p = schedule[t]
        return min(n, max(1, s)), min(m, max(k, p))
    floor = min(options.min_samples, n)
    return (min(n, max(floor, _ceil_frac(options.sample_shrink, n))),
            min(m, max(k, _ceil_frac(options.param_shrink, m))))


# -- the driver ------------------------------------------------------------------------


@dataclasses.dataclass
class Candidate:
    """Round t's candidate: S_{t+1} and the top-k of P_{t+1}, as flat indices per leaf."""

    round: int
    samples: np.ndarray  # example ids, ascending
    mask_indices: PyTree  # int32 flat indices of the selected entries, per leaf

    def mask(self, like: PyTree) -> PyTree:
        """The candidate's bool mask, shaped like `like` (the params)."""
        def leaf(idx, p):
            m = np.zeros(np.size(p), bool)
            m[idx] = True
            return m.reshape(np.shape(p))

        return jax.tree_util.tree_map(leaf, self.mask_indices, like)


@dataclasses.dataclass
class RoundRecord:
    """Everything a round used (kept only with `keep_history`, for tests and analysis)."""

    samples: np.ndarray  # S_t
    range_mask: PyTree  # P_t
    ranking_mask: PyTree | None  # the mask the masses were taken over (None: no ranking)
    sample_mass: np.ndarray | None  # s_i for S_t (aligned), None if nothing was ranked
    scores: PyTree  # F over S_{t+1}


@dataclasses.dataclass
class IRDResult:
    samples: np.ndarray  # the chosen S (example ids into the training split, ascending)
    mask: PyTree  # the chosen mask: bool tree shaped like the params, exactly k entries
    trace: dict[str, Any]  # per-round sizes, masses, passes, labels (JSON-ready)
    candidates: list[Candidate]  # every round's candidate
    history: list[RoundRecord]  # empty unless keep_history
    backward_passes: int  # per-example backward passes spent, all rounds
    seconds: float


def _pick_best(candidates: list[Candidate], trace_rounds: list[dict[str, Any]],
               params: PyTree, score: Callable[[PyTree], float]) -> Candidate:
    """`final="best_dev"`: the candidate with the highest score (ties: the earliest round).

    Consecutive rounds often repeat a candidate (once |P| = k); a repeat is not scored
    again. Each round's score is written into its trace entry (`candidate_score`).
    """
    best, best_score, last_indices, last_score = None, -np.inf, None, None
    for cand, entry in zip(candidates, trace_rounds, strict=True):
        repeat = last_indices is not None and all(
            np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(cand.mask_indices),
                                                 jax.tree_util.tree_leaves(last_indices),
                                                 strict=True))
        if not repeat:
            t0 = time.perf_counter()
            last_score = float(score(cand.mask(params)))
            log.info("ird best_dev: round %d candidate scores %.4f (%.1fs)", cand.round,
                     last_score, time.perf_counter() - t0)
        entry["candidate_score"] = last_score
        entry["candidate_score_reused"] = repeat
        last_indices = cand.mask_indices
        if last_score > best_score:  # NaN never wins
            best, best_score = cand, last_score
    return best if best is not None else candidates[-1]


def _sample_summary(data: TokenizedSplit, ids: np.ndarray, objective: Objective
                    ) -> dict[str, Any]:
    return {"n": int(len(ids)), "labels": objective.target_summary(data.labels[ids]),
            "length_mean": float(np.mean(data.lengths[ids])) if len(ids) else None}


def _row_target(data: TokenizedSplit, objective: Objective, row: int) -> Any:
    """One row's target for the trace: its label, or the objective's summary of a
    per-token target (a causal LM's)."""
    target = data.labels[row]
    return target.item() if target.size == 1 else objective.target_summary(target[None])


def _round_stats(data: TokenizedSplit, objective: Objective, samples: np.ndarray, kept: np.ndarray,
                 mass: np.ndarray | None, scores: PyTree, range_: PyTree, new_range: PyTree,
                 full_range: PyTree, candidate: PyTree) -> dict[str, Any]:
    """A round's sizes, Fisher mass kept, and who was kept (labels, lengths, top masses)."""
    total_mass = None if mass is None else max(float(np.sum(mass, dtype=np.float64)), 1e-30)
    return {
        "samples_in": int(len(samples)),
        "samples_kept": int(len(kept)),
        "params_in": count_true(range_),
        "params_kept": count_true(new_range),
        # s_i of the kept samples / of S_t; F over P_{t+1} / over P_t; F over the candidate
        # mask / over every eligible entry (F: over the kept samples).
        "sample_mass_kept": None if mass is None else float(
            np.sum(mass[np.isin(samples, kept)], dtype=np.float64) / total_mass),
        "param_mass_kept": _masked_sum(scores, new_range) / max(_masked_sum(scores, range_),
                                                                1e-30),
        "mask_mass": _masked_sum(scores, candidate) / max(_masked_sum(scores, full_range),
                                                          1e-30),
        "kept": _sample_summary(data, kept, objective),
        "dropped": _sample_summary(data, np.setdiff1d(samples, kept), objective),
        "largest_mass": [] if mass is None else [
            {"id": int(samples[i]), "label": _row_target(data, objective, samples[i]),
             "length": int(data.lengths[samples[i]]), "mass_share": float(mass[i] / total_mass)}
            for i in np.argsort(-mass, kind="stable")[:5]],
        "kept_ids": [int(i) for i in kept],
    }


def run_ird(
    loss_fn: LossFn,
    params: PyTree,
    data: TokenizedSplit,
    *,
    eligible: PyTree | str | None,
    k: int,
    options: IRDOptions | None = None,
    seed: int = 0,
    mode: str = "empirical",
    objective: Objective | None = None,
    batch_size: int = 32,
    chunk_size: int | str = "auto",
    engine: str = "per_example",
    pool: np.ndarray | None = None,
    progress: bool = True,
    keep_history: bool = False,
    candidate_score: Callable[[PyTree], float] | None = None,
) -> IRDResult:
    """Runs IRD's rounds and returns the chosen samples, the k-entry mask and a trace.

    Args:
      loss_fn: `loss_fn(params, batch)`, as for `fishjax.selection.fisher.fisher_scores`.
      params: the parameter pytree (fixed throughout: no training between rounds).
      data: the training split; examples are addressed by index into it.
      eligible: P_0's leaves (bool tree, regex or None for all); the head excluded.
      k: the mask size (>= 1).
      options: `IRDOptions` (defaults: N0 1024, a_s = a_p = 0.5, N_min 32, T 8).
      seed: draws the pool S_0 (`draw_pool`).
      mode, objective, batch_size, chunk_size, engine: the Fisher passes (`fisher_pass`);
        `objective` (default: 2-class classification) also summarises each round's targets.
      pool: explicit S_0 ids (overrides `pool_size` and `seed`).
      progress: progress bars.
      keep_history: also return every round's inputs, masses and scores (memory: a
        float tree and two bool trees shaped like the params per round).
      candidate_score: `final="best_dev"` only (required then): maps a candidate's bool
        mask to a score, higher is better; called once per distinct candidate mask.

    Example:
      >>> res = run_ird(loss_fn, params, train_split, eligible=r"^(embeddings|encoder)/",
      ...               k=100_000, options=IRDOptions(pool_size=1024), seed=0)
      >>> res.mask              # bool tree, exactly k entries
      >>> res.samples           # the kept example ids
      >>> res.trace["rounds"]   # sizes, Fisher mass kept, passes, labels per round
    """
    options = options or IRDOptions()
    if options.final == "best_dev" and candidate_score is None:
        raise IRDError("final='best_dev' needs a candidate_score (the `ird` method passes a "
                       "short training run scored on the dev set)", "final")
    t_start = time.perf_counter()
    elig = resolve_eligible(params, eligible)
    full_range = range_ = initial_range(params, elig)
    p0 = count_true(range_)
    if not 1 <= k <= p0:
        raise IRDError(f"k must be in 1..{p0} (the eligible entries), got {k}")
    samples = draw_pool(len(data), options.pool_size, seed) if pool is None else \
        np.unique(np.asarray(pool, np.int64))
    pool_ids = samples
    n0 = len(samples)
    if pool is None and n0 < options.pool_size:
        log.warning("ird: the training set has %d examples, fewer than pool_size=%d; "
                    "using all of them", n0, options.pool_size)
    schedule = resolve_schedule(options.schedule, n0, p0)
    rounds = len(schedule) if schedule else options.max_rounds
    objective = SequenceClassification() if objective is None else objective
    per_example = backward_passes_per_example(mode, objective)
    passes = functools.partial(fisher_pass, loss_fn, params, eligible=elig, mode=mode,
                               objective=objective, chunk_size=chunk_size, engine=engine,
                               progress=progress)

    mass_cache: tuple[PyTree, np.ndarray, np.ndarray] | None = None  # (mask, ids, masses)
    f_cache: tuple[np.ndarray, PyTree] | None = None  # (sample ids, F over them)
    fish_pool_mask: PyTree | None = None
    prev_candidate: PyTree | None = None
    candidates: list[Candidate] = []
    history: list[RoundRecord] = []
    trace_rounds: list[dict[str, Any]] = []
    total_passes, stop_reason = 0, "max_rounds" if not schedule else "schedule_end"

    def remember_scores(ids: np.ndarray, scores: PyTree) -> None:
        nonlocal f_cache, fish_pool_mask
        f_cache = (ids, jax.tree_util.tree_map(np.asarray, scores))
        if fish_pool_mask is None and np.array_equal(ids, pool_ids):
            fish_pool_mask = top_k_mask(f_cache[1], k, elig)

    for t in range(rounds):
        t0 = time.perf_counter()
        n_next, m_next = next_sizes(t, len(samples), count_true(range_), k,
                                    options, schedule)
        ranking_examples = scoring_examples = 0
        ranking_mask = mass = None
        # (1)-(2): rank S_t by Fisher mass over the ranking mask, keep the top n_next.
        if n_next < len(samples):
            ranking_mask = range_ if options.sample_ranking == "range" else full_range
            if mass_cache is not None and _same_mask(mass_cache[0], ranking_mask):
                mass = _lookup(mass_cache[1], mass_cache[2], samples)
            if mass is None:
                res = passes(index_batches(data, samples, batch_size), mass_mask=ranking_mask,
                             desc=f"ird round {t}: ranking")
                ranking_examples = res.num_examples
                mass_cache = (ranking_mask, res.example_ids, res.example_mass)
                mass = _lookup(res.example_ids, res.example_mass, samples)
                remember_scores(res.example_ids, res.scores)
            kept = keep_top_samples(samples, mass, n_next)
        else:
            kept = samples
        # (3): F over S_{t+1}; shrink P_t to its top m_next entries by F.
        if f_cache is None or not np.array_equal(f_cache[0], kept):
            res = passes(index_batches(data, kept, batch_size), desc=f"ird round {t}: scoring")
            scoring_examples = res.num_examples
            remember_scores(res.example_ids, res.scores)
        scores = f_cache[1]
        new_range = top_k_in_range(scores, range_, m_next, elig)
        candidate = top_k_in_range(scores, new_range, k, elig)
        spent = (ranking_examples + scoring_examples) * per_example
        total_passes += spent

        entry = {
            "round": t,
            "sample_ranking": "none" if ranking_mask is None else options.sample_ranking,
            **_round_stats(data, objective, samples, kept, mass, scores, range_, new_range,
                           full_range, candidate),
            "ranking_pass_examples": ranking_examples,
            "scoring_pass_examples": scoring_examples,
            "backward_passes": spent,
            "cumulative_backward_passes": total_passes,
            "mask_overlap_prev": None if prev_candidate is None else
            _overlap(candidate, prev_candidate) / k,
            "mask_overlap_fish_pool": None if fish_pool_mask is None else
            _overlap(candidate, fish_pool_mask) / k,
            "seconds": time.perf_counter() - t0,
        }
        trace_rounds.append(entry)
        log.info("ird round %d: samples %d -> %d, params %d -> %d, %d backward passes "
                 "(%d so far), mask mass %.3f", t, entry["samples_in"], entry["samples_kept"],
                 entry["params_in"], entry["params_kept"], spent, total_passes,
                 entry["mask_mass"])
        candidates.append(Candidate(round=t, samples=kept, mask_indices=jax.tree_util.tree_map(
            lambda m: np.flatnonzero(m).astype(np.int32), candidate)))
        if keep_history:
            history.append(RoundRecord(samples=samples, range_mask=range_,
                                       ranking_mask=ranking_mask, sample_mass=mass,
                                       scores=scores))
        fixed = np.array_equal(kept, samples) and _same_mask(new_range, range_)
        samples, range_, prev_candidate = kept, new_range, candidate
        if fixed:
            stop_reason = "fixed_point"
            break
        if not schedule and count_true(range_) == k and len(samples) == min(
                options.min_samples, n0):
            stop_reason = "converged"
            break

    final = candidates[-1]
    if options.final == "best_dev":
        final = _pick_best(candidates, trace_rounds, params, candidate_score)
    trace = {
        "algorithm": "IRD, our reconstruction (Dong, Xue, Zheng & He, 2024); see the design "
                     "note of fishjax/ird.py",
        "options": dataclasses.asdict(options),
        "k": k,
        "eligible_entries": p0,
        "seed": seed,
        "pool": {**_sample_summary(data, pool_ids, objective),
                 "requested": options.pool_size, "ids": [int(i) for i in pool_ids]},
        "fisher": {"mode": mode, "batch_size": batch_size, "chunk_size": chunk_size,
                   "backward_passes_per_example": per_example},
        "rounds": trace_rounds,
        "stop_reason": stop_reason,
        "final": {"rule": options.final, "round": final.round,
                  "samples": [int(i) for i in final.samples],
                  **({"note": "picked by dev score: the run's dev metric is optimistically "
                              "biased"} if options.final == "best_dev" else {})},
        "backward_passes": total_passes,
        "fish_backward_passes_same_pool": n0 * per_example,
        "seconds": time.perf_counter() - t_start,
    }
    mask = prev_candidate if final is candidates[-1] else final.mask(params)
    return IRDResult(samples=final.samples, mask=mask, trace=trace, candidates=candidates,
                     history=history, backward_passes=total_passes, seconds=trace["seconds"])
