"""Decoder speed and memory on CPU: fishjax vs transformers' PyTorch Llama, same weights.

  python -m benchmarks.speed.decoder --json benchmarks/results/decoder_speed.json

On `smollm2-135m` (`--model`; any decoder source fishjax loads), one batch of `--batch`
rows of `--seq_len` random tokens (fixed seed; the second half of each row is the target),
in one process:
- training tokens/s: one full fine-tuning step (forward, backward, AdamW lr 1e-4) of
  fishjax (`make_loss_fn` of the causal-LM objective, jitted with the update) and of
  transformers' `LlamaForCausalLM` on the same float32 weights (`torch.optim.AdamW`,
  `torch.set_num_threads(--threads)`), each the median of `--steps` timed steps after one
  warm-up step;
- the Fisher pass vs one batched gradient: `fisher_scores` over the batch's rows (every
  parameter, per-example engine, chunk "auto") against `jax.grad` of the batch's mean
  loss, as examples/s (the median of `--steps` timed calls after a compiling one);
- optimizer-state bytes of methods, from the trainer's own state on the bundled
  instruction sample (`--methods`: full, fish, sift, lora, lora_fish; Fisher over 8 rows,
  LoRA-FISH's warm-up 2 steps), each in a fresh process that also reports its peak
  resident memory after two training steps.

JSON: the figures, their ratios, the settings, versions and the machine (`machine()`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
import optax

from benchmarks.common import cli
from benchmarks.common.machine import machine
from configs import smollm2_chat
from fishjax.core.tree import flatten_paths
from fishjax.models import load_model
from fishjax.models.decoder_family import is_gguf
from fishjax.models.gguf_weights import gguf_config, gguf_tensors
from fishjax.objectives import CausalLanguageModeling, make_loss_fn
from fishjax.objectives.causal_lm import IGNORE
from fishjax.selection.fisher import fisher_scores
from fishjax.train.trainer import Trainer

LR = 1e-4
METHODS = ("full", "fish", "sift", "lora", "lora_fish")


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(batch, seq)).astype(np.int32)
    labels = np.full_like(ids, IGNORE)
    labels[:, seq // 2:-1] = ids[:, seq // 2 + 1:]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels,
            "weights": np.ones(batch, np.float32)}


def _median_time(fn, steps: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fishjax_rates(model, batch, steps: int) -> dict[str, float]:
    loss_fn = make_loss_fn(model.module, CausalLanguageModeling())
    tx = optax.adamw(LR)
    state = {"params": model.params, "opt": tx.init(model.params)}

    @jax.jit
    def train_step(params, opt, b):
        loss, grads = jax.value_and_grad(loss_fn)(params, b)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    def one_step():
        state["params"], state["opt"], loss = train_step(state["params"], state["opt"], batch)
        loss.block_until_ready()

    grad = jax.jit(jax.grad(loss_fn))
    n, tokens = len(batch["weights"]), batch["input_ids"].size
    step_s = _median_time(one_step, steps)
    grad_s = _median_time(lambda: jax.block_until_ready(grad(model.params, batch)), steps)
    fisher_s = _median_time(lambda: fisher_scores(loss_fn, model.params, [batch],
                                                  progress=False), steps)
    return {"train_tokens_per_s": tokens / step_s, "train_step_s": step_s,
            "batched_grad_ex_per_s": n / grad_s, "fisher_ex_per_s": n / fisher_s}


def torch_rate(model_dir: str, batch, steps: int, threads: int) -> float | None:
    try:  # the interop extra
        import torch
        import transformers
    except ImportError:
        return None
    torch.set_num_threads(threads)
    if is_gguf(model_dir):  # the same dequantized tensors as fishjax's
        config = {k: v for k, v in gguf_config(model_dir).items() if k != "architectures"}
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
        model.load_state_dict({k: torch.tensor(v) for k, v in
                               gguf_tensors(model_dir).items()}, strict=False)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    inputs = {k: torch.from_numpy(batch[k].astype(np.int64))
              for k in ("input_ids", "attention_mask", "labels")}

    def one_step():
        opt.zero_grad()
        model(**inputs).loss.backward()
        opt.step()

    return batch["input_ids"].size / _median_time(one_step, steps)


def method_memory(name: str, model_name: str) -> dict[str, float]:
    """The method's optimizer-state bytes and this process's peak RSS after two steps."""
    config = smollm2_chat.get_config()
    config.model.name = model_name
    config.method.name = name
    config.method.fisher.num_samples = 8
    config.method.peft.warmup_steps = 2
    config.train.num_steps = 2
    config.train.eval_before_training = False
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        for batch in trainer.epoch_batches(0):
            trainer.step(batch)
            if int(trainer.state.step) == 2:
                break
        opt_bytes = sum(int(np.asarray(x).nbytes) for x in
                        jax.tree_util.tree_leaves(trainer.state.opt_state))
        trainable = sum(int(np.size(x)) for x in
                        flatten_paths(trainer.state.trainable).values())
    return {"optimizer_state_bytes": opt_bytes, "trainable_entries": trainable,
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not `getrusage`'s ru_maxrss: Linux
    keeps that across fork and exec, so a child started by a large parent reports the
    parent's peak."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--method_child", help=argparse.SUPPRESS)
    cli.add_json(parser)
    args = parser.parse_args(argv)
    if args.method_child:
        cli.print_child_result(method_memory(args.method_child, args.model))
        return
    model = load_model(args.model, None, key=jax.random.PRNGKey(0))
    batch = make_batch(model.config.vocab_size, args.batch, args.seq_len)
    out = {"settings": vars(args), "machine": machine()}
    out["fishjax"] = fishjax_rates(model, batch, args.steps)
    out["torch_train_tokens_per_s"] = torch_rate(model.model_dir, batch, args.steps,
                                                 args.threads)
    f = out["fishjax"]
    out["train_ratio_vs_torch"] = (None if out["torch_train_tokens_per_s"] is None else
                                   f["train_tokens_per_s"] / out["torch_train_tokens_per_s"])
    out["fisher_vs_batched_grad"] = f["fisher_ex_per_s"] / f["batched_grad_ex_per_s"]
    print(f"train {f['train_tokens_per_s']:.1f} tokens/s (torch "
          f"{out['torch_train_tokens_per_s']}); Fisher / batched gradient examples/s "
          f"{out['fisher_vs_batched_grad']:.2f}", file=sys.stderr, flush=True)
    out["methods"] = {}
    for name in [m for m in args.methods.split(",") if m]:
        proc = cli.run_module("benchmarks.speed.decoder",
                              ["--model", args.model, "--method_child", name],
                              capture_output=True, text=True, check=False)
        try:
            out["methods"][name] = cli.child_result(proc.stdout)
        except cli.NoChildResult:
            raise SystemExit(f"method {name} failed: {proc.stderr[-2000:]}") from None
        print(f"{name}: {out['methods'][name]}", file=sys.stderr, flush=True)
    full = out["methods"].get("full", {}).get("optimizer_state_bytes")
    for stats in out["methods"].values():
        stats["optimizer_state_vs_full"] = None if not full else \
            stats["optimizer_state_bytes"] / full
    print(json.dumps(out, indent=2))
    if args.json:
        cli.write_json(args.json, out)


if __name__ == "__main__":
    main()
