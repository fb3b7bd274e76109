"""What a frozen encoder gives a linear head: converged probes on three sentence features.

  python -m benchmarks.analysis.frozen_probe --glue_dir=../shared/data/glue --tasks=rte,mrpc \\
      --json benchmarks/results/frozen_probe.json --readme README.md

`head_only` and every X-PEFT profile train a linear classifier over BERT's pooler,
tanh(dense(h_[CLS])), with the encoder (and the pooler) frozen; in the X-PEFT grid they
stay at the majority class on MRPC. This asks whether the features or the training are
the limit. From one forward pass of the frozen model (dropout off) each example gets
- `pooler`: the pooler's output, what the `head_only` classifier reads;
- `cls`: the last layer's hidden state of the first token, h_[CLS];
- `mean`: the mean of the last layer over the non-pad tokens (the pooling
  all-MiniLM-L6-v2 was trained for, by sentence-transformers).
Probe: multinomial logistic regression with an intercept on the features standardised by
the train split's mean and std, L2 strength (on the weights, per train example) chosen by
`--folds`-fold cross-validation on the train split from `--l2` (the dev split is never
used to choose), then refitted on the whole train split; L-BFGS to a gradient tolerance,
a fit that does not converge is an error. Score: the task's main metric on dev, beside
the majority class's. JSON: per task, per feature: `dev` metrics, `cv` (mean held-out
accuracy per L2), `l2`, plus `majority`, sizes, seconds and the machine.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from benchmarks.common import cli
from benchmarks.common.machine import machine
from fishjax.data import (
    compute_metrics,
    get_task,
    index_batches,
    load_split,
    tokenize_split,
)
from fishjax.models import LoadedModel, load_model, load_tokenizer

FEATURES = ("pooler", "cls", "mean")
README_BLOCK = "frozen-probe"
DEFAULT_L2 = "1e-4,1e-3,1e-2,1e-1,1,10"


class ProbeError(RuntimeError):
    """A probe that cannot be fitted as asked (bad options, no convergence)."""


def _is_encoder_or_pooler(module, method_name: str) -> bool:
    return method_name == "__call__" and module.name in ("encoder", "pooler")


def sentence_features(model: LoadedModel, batches) -> dict[str, np.ndarray]:
    """`pooler`, `cls` and `mean` features [N, H] of the examples in `batches` (each batch
    with `example_ids`, -1 on padding rows, as from `fishjax.data.index_batches`)."""

    @jax.jit
    def features(params, batch):
        _, state = model.module.apply(
            {"params": params}, batch["input_ids"], batch["attention_mask"],
            batch["token_type_ids"], capture_intermediates=_is_encoder_or_pooler)
        hidden = state["intermediates"]["encoder"]["__call__"][0]
        mask = batch["attention_mask"].astype(hidden.dtype)[..., None]
        mean = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
        return {"pooler": state["intermediates"]["pooler"]["__call__"][0],
                "cls": hidden[:, 0], "mean": mean}

    rows: dict[str, list] = {name: [] for name in FEATURES}
    ids = []
    for batch in batches:
        keep = batch["example_ids"] >= 0
        out = features(model.params, {k: jnp.asarray(v) for k, v in batch.items()
                                      if k != "example_ids"})
        for name in FEATURES:
            rows[name].append(np.asarray(out[name], np.float64)[keep])
        ids.append(batch["example_ids"][keep])
    order = np.argsort(np.concatenate(ids), kind="stable")
    return {name: np.concatenate(rows[name])[order] for name in FEATURES}


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                 tol: float = 1e-6) -> np.ndarray:
    """Weights [D + 1, K] (the last row the intercept) minimising the mean cross-entropy
    + l2/2 |W|^2 (the intercept not penalised); ProbeError if L-BFGS does not converge."""
    n, d = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    onehot = np.eye(num_classes)[y]
    penalty = np.ones((d + 1, 1))
    penalty[-1] = 0.0

    def loss_and_grad(flat):
        w = flat.reshape(d + 1, num_classes)
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(onehot * logp).sum() / n + 0.5 * l2 * ((w * penalty) ** 2).sum()
        grad = xb.T @ (np.exp(logp) - onehot) / n + l2 * w * penalty
        return loss, grad.ravel()

    res = minimize(loss_and_grad, np.zeros((d + 1) * num_classes), jac=True,
                   method="L-BFGS-B", options={"maxiter": 5000, "gtol": tol})
    if not res.success:
        raise ProbeError(f"logistic probe (l2={l2}) did not converge: {res.message}")
    return res.x.reshape(d + 1, num_classes)


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x @ w[:-1] + w[-1]).argmax(axis=1)


def choose_l2(x: np.ndarray, y: np.ndarray, num_classes: int, l2s: list[float],
              folds: int, seed: int) -> tuple[float, dict[str, float]]:
    """The L2 with the best mean held-out accuracy over `folds` seeded folds of the train
    split (ties: the stronger L2), and every L2's mean accuracy."""
    if folds < 2 or folds > len(y):
        raise ProbeError(f"folds must be in 2..{len(y)} (train examples), got {folds}")
    fold_of = np.random.default_rng(seed).permutation(len(y)) % folds
    cv = {}
    for l2 in l2s:
        accs = []
        for f in range(folds):
            train, held = fold_of != f, fold_of == f
            w = fit_logistic(x[train], y[train], num_classes, l2)
            accs.append(float(np.mean(predict(w, x[held]) == y[held])))
        cv[repr(l2)] = float(np.mean(accs))
    best = max(l2s, key=lambda l2: (cv[repr(l2)], l2))
    return best, cv


def probe(train: np.ndarray, y_train: np.ndarray, dev: np.ndarray, num_classes: int,
          l2s: list[float], folds: int, seed: int) -> tuple[np.ndarray, dict]:
    """Standardise by the train split, choose L2 by CV, refit; dev predictions and a report."""
    mu, sd = train.mean(axis=0), train.std(axis=0)
    sd[sd == 0] = 1.0  # a constant feature carries nothing; keep it finite
    xt, xd = (train - mu) / sd, (dev - mu) / sd
    l2, cv = choose_l2(xt, y_train, num_classes, l2s, folds, seed)
    w = fit_logistic(xt, y_train, num_classes, l2)
    return predict(w, xd), {"l2": l2, "cv": cv,
                            "train_accuracy": float(np.mean(predict(w, xt) == y_train))}


def _tokenized(task, split: str, glue_dir: str, tokenizer, max_length: int, max_samples,
               seed: int, rows: np.ndarray | None = None):
    # quickstart (no GLUE folder) reads fishjax's bundled sample; GLUE tasks read their
    # folder under --glue_dir, never the hub.
    data_dir = os.path.join(glue_dir, task.glue_folder) if task.glue_folder else None
    raw = load_split(task, split, data_dir, max_samples=max_samples, seed=seed)
    if rows is not None:
        if rows.size and rows.max() >= len(raw):
            raise ProbeError(f"{task.name}: train row {int(rows.max())} is past the "
                             f"{len(raw)} rows of {raw.source}")
        raw = raw.rows(rows)
    buckets = tuple(b for b in (32, 64, 128, 256, 512) if b < max_length) + (max_length,)
    return tokenize_split(raw, tokenizer, max_length=max_length, buckets=buckets)


def run_task(model: LoadedModel, task_name: str, args,
             train_rows: np.ndarray | None = None) -> dict:
    """The probes of one task; `train_rows` (indices into its training split, after
    `args.max_train_samples`) fits them on those rows only."""
    task = get_task(task_name)
    if task.is_regression:
        raise ProbeError(f"{task.name} is a regression task; the probe is a classifier")
    tokenizer = load_tokenizer(model.model_dir)
    t0 = time.perf_counter()
    splits, feats = {}, {}
    for role, split in (("train", task.train_split), ("dev", task.eval_splits[0])):
        ds = _tokenized(task, split, args.glue_dir, tokenizer, args.max_length,
                        args.max_train_samples if role == "train" else None, args.seed,
                        train_rows if role == "train" else None)
        splits[role] = ds
        feats[role] = sentence_features(
            model, index_batches(ds, np.arange(len(ds)), args.batch_size))
    encode_s = time.perf_counter() - t0
    y_train, y_dev = splits["train"].labels.astype(np.int64), splits["dev"].labels
    majority = np.full(len(y_dev), np.bincount(y_train, minlength=task.num_labels).argmax())
    out = {"train_examples": len(y_train), "dev_examples": len(y_dev),
           "dev_split": task.eval_splits[0], "main_metric": task.main_metric,
           "majority": compute_metrics(task, majority, y_dev), "encode_s": encode_s}
    for name in FEATURES:
        t1 = time.perf_counter()
        pred, report = probe(feats["train"][name], y_train, feats["dev"][name],
                             task.num_labels, args.l2s, args.folds, args.seed)
        out[name] = {"dev": compute_metrics(task, pred, y_dev), **report,
                     "fit_s": time.perf_counter() - t1}
        print(f"{task.name} {name}: dev {task.main_metric} "
              f"{100 * out[name]['dev'][task.main_metric]:.1f} (l2 {report['l2']:g}, "
              f"train acc {100 * report['train_accuracy']:.1f}); majority "
              f"{100 * out['majority'][task.main_metric]:.1f}", flush=True)
    return out


def probe_rows(task_name: str, glue_dir: str, train_rows: np.ndarray, max_length: int,
               model: str = "minilm-l6", l2: str = DEFAULT_L2, folds: int = 5, seed: int = 0,
               batch_size: int = 64) -> dict:
    """`run_task` for one task, its probes fitted on `train_rows` of the training split."""
    args = argparse.Namespace(glue_dir=glue_dir, max_length=max_length, batch_size=batch_size,
                              max_train_samples=None, folds=folds, seed=seed,
                              l2s=[float(v) for v in l2.split(",")])
    task = get_task(task_name)
    loaded = load_model(model, task.num_labels, key=jax.random.PRNGKey(seed))
    return run_task(loaded, task.name, args, train_rows=np.asarray(train_rows, np.int64))


def readme_table(result: dict) -> str:
    """The README's table: per task, the majority class and each feature's dev score."""
    rows = ["| task (dev metric) | majority class | " + " | ".join(
        f"probe on `{name}` (L2)" for name in FEATURES) + " |",
            "|---" * (2 + len(FEATURES)) + "|"]
    for task, r in result["tasks"].items():
        metric = r["main_metric"]
        cells = [f"{100 * r[name]['dev'][metric]:.1f} ({r[name]['l2']:g})" for name in FEATURES]
        rows.append(f"| {task} ({metric}) | {100 * r['majority'][metric]:.1f} | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=cli.GLUE_DIR)
    p.add_argument("--tasks", default="rte,mrpc")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--l2", default=DEFAULT_L2, help="comma-separated L2 strengths to choose from")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    cli.add_json(p)
    cli.add_readme(p, README_BLOCK, report="only rewrite --readme from the existing --json")
    args = p.parse_args(argv)
    if args.report:
        if not (args.json and args.readme):
            raise ProbeError("--report needs --json (the result) and --readme")
        return cli.report_from_json(args, README_BLOCK, readme_table)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args.l2s = [float(v) for v in args.l2.split(",")]
    except ValueError as e:
        raise ProbeError(f"--l2 must be comma-separated numbers, got {args.l2!r}") from e
    if not args.l2s or any(not np.isfinite(v) or v < 0 for v in args.l2s):
        raise ProbeError(f"--l2 values must be finite and >= 0, got {args.l2!r}")
    tasks = [t for t in args.tasks.split(",") if t]
    model = None
    result = {"model": args.model, "max_length": args.max_length, "folds": args.folds,
              "l2_grid": args.l2s, "seed": args.seed, "tasks": {}}
    for name in tasks:
        task = get_task(name)
        if model is None or model.module.num_labels != task.num_labels:
            # The head is not used; only the encoder and the pooler are read.
            model = load_model(args.model, task.num_labels, key=jax.random.PRNGKey(args.seed))
        result["tasks"][task.name] = run_task(model, task.name, args)
    result.update(machine())
    cli.save_result(args, result, README_BLOCK, readme_table)
    return result


if __name__ == "__main__":
    main()
