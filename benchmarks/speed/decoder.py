"""Decoder speed and memory on CPU: fishjax vs transformers' PyTorch Llama, same weights.

  python -m benchmarks.speed.decoder --json benchmarks/results/decoder_speed.json

On `smollm2-135m` (`--model`; any decoder source fishjax loads), one batch of `--batch`
rows of `--seq_len` random tokens (fixed seed; the second half of each row is the target),
measured once per memory allocator of `--allocators` ("system": glibc's malloc; "tcmalloc"
or "jemalloc": preloaded with LD_PRELOAD where installed, e.g. `apt install
libtcmalloc-minimal4`), each in a fresh process that runs both frameworks:
- training tokens/s: one full fine-tuning step (forward, backward, AdamW lr 1e-4) of
  fishjax (`make_loss_fn` of the causal-LM objective, jitted with the update, the state
  donated as the trainer does) and of transformers' `LlamaForCausalLM` on the same float32
  weights (`torch.optim.AdamW`, `torch.set_num_threads(--threads)`), each the median of
  `--steps` timed steps after one warm-up step, with the median step's system CPU time and
  minor page faults (what a fresh allocation per step costs);
- the Fisher pass vs one batched gradient: `fisher_scores` over the batch's rows (every
  parameter, per-example engine, chunk "auto") against `jax.grad` of the batch's mean
  loss, as examples/s (the median of `--steps` timed calls after a compiling one);
- generation tokens/s: `--gen_tokens` greedy tokens after `--batch` prompts of
  `--gen_prompt` random tokens, `fishjax.models.generate.generate` (no stop token) vs
  transformers' `generate` (`min_new_tokens` = `max_new_tokens`, its key/value cache);
- optimizer-state bytes of methods, from the trainer's own state on the bundled
  instruction sample (`--methods`: full, fish, sift, lora, lora_fish; Fisher over 8 rows,
  LoRA-FISH's warm-up 2 steps), each in a fresh process that also reports its peak
  resident memory after two training steps.

JSON: the figures, their ratios, the settings, versions and the machine (`machine()`).
"""

from __future__ import annotations

import argparse
import ctypes.util
import functools
import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import cli
from benchmarks.common.machine import machine, peak_rss_mib
from configs import smollm2_chat
from fishjax.core.tree import flatten_paths
from fishjax.models import load_model
from fishjax.models.decoder_family import is_gguf
from fishjax.models.generate import generate
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


def timed(fn, steps: int) -> dict[str, float]:
    """The median wall seconds of `steps` calls of `fn` after a warm-up (compiling) one, and
    the system CPU seconds and minor page faults of that median call."""
    fn()
    runs = []
    for _ in range(steps):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        runs.append((t1 - t0, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
    wall, sys_s, faults = sorted(runs)[len(runs) // 2]
    return {"s": wall, "sys_s": sys_s, "minor_faults": faults}


def fishjax_rates(model, batch, steps: int) -> dict[str, Any]:
    loss_fn = make_loss_fn(model.module, CausalLanguageModeling())
    tx = optax.adamw(LR)
    params = jax.tree_util.tree_map(jnp.array, model.params)  # a copy: the step donates it
    state = {"params": params, "opt": tx.init(params)}

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt, b):
        loss, grads = jax.value_and_grad(loss_fn)(params, b)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    def one_step():
        state["params"], state["opt"], loss = train_step(state["params"], state["opt"], batch)
        loss.block_until_ready()

    grad = jax.jit(jax.grad(loss_fn))
    n, tokens = len(batch["weights"]), batch["input_ids"].size
    step = timed(one_step, steps)
    state.clear()  # free the donated state before the other passes
    grad_t = timed(lambda: jax.block_until_ready(grad(model.params, batch)), steps)
    fisher_t = timed(lambda: fisher_scores(loss_fn, model.params, [batch], progress=False),
                     steps)
    return {"train_tokens_per_s": tokens / step["s"], "train_step": step,
            "batched_grad_ex_per_s": n / grad_t["s"], "batched_grad": grad_t,
            "fisher_ex_per_s": n / fisher_t["s"], "fisher": fisher_t}


def fishjax_generation(model, prompts: np.ndarray, new_tokens: int, steps: int
                       ) -> dict[str, Any]:
    mask = np.ones_like(prompts)
    t = timed(lambda: generate(model.module, model.params, prompts, mask,
                               max_new_tokens=new_tokens, stop_id=-1, pad_id=0), steps)
    return {"tokens_per_s": prompts.shape[0] * new_tokens / t["s"], **t}


def torch_model(model_dir: str):
    """transformers' LlamaForCausalLM on fishjax's float32 weights, or None without torch."""
    try:  # the interop extra
        import torch
        import transformers
    except ImportError:
        return None
    if is_gguf(model_dir):  # the same dequantized tensors as fishjax's
        config = {k: v for k, v in gguf_config(model_dir).items() if k != "architectures"}
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
        model.load_state_dict({k: torch.tensor(v) for k, v in
                               gguf_tensors(model_dir).items()}, strict=False)
        return model
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir)


def torch_rates(model, batch, prompts: np.ndarray, new_tokens: int, steps: int
                ) -> dict[str, Any]:
    import torch
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    inputs = {k: torch.from_numpy(batch[k].astype(np.int64))
              for k in ("input_ids", "attention_mask", "labels")}

    def one_step():
        opt.zero_grad()
        model(**inputs).loss.backward()
        opt.step()

    step = timed(one_step, steps)
    model.eval()
    ids = torch.from_numpy(prompts.astype(np.int64))

    def gen():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           do_sample=False, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, pad_token_id=0)

    gen_t = timed(gen, steps)
    return {"train_tokens_per_s": batch["input_ids"].size / step["s"], "train_step": step,
            "generation": {"tokens_per_s": prompts.shape[0] * new_tokens / gen_t["s"],
                           **gen_t}}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Both frameworks' figures in this process (one allocator)."""
    model = load_model(args.model, None, key=jax.random.PRNGKey(0))
    batch = make_batch(model.config.vocab_size, args.batch, args.seq_len)
    prompts = make_batch(model.config.vocab_size, args.batch, args.gen_prompt,
                         seed=1)["input_ids"]
    out: dict[str, Any] = {"fishjax": fishjax_rates(model, batch, args.steps)}
    out["fishjax"]["generation"] = fishjax_generation(model, prompts, args.gen_tokens,
                                                      args.steps)
    tmodel = torch_model(model.model_dir)
    if tmodel is not None:
        import torch
        torch.set_num_threads(args.threads)
        out["torch"] = torch_rates(tmodel, batch, prompts, args.gen_tokens, args.steps)
    return out


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


# The libraries preloaded for each allocator ("system": glibc's malloc, nothing preloaded).
ALLOCATORS = {"system": None, "tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc"}


def preload_library(allocator: str) -> str | None:
    """The library LD_PRELOAD names for `allocator` (None: glibc's malloc); a clear error
    for an unknown or uninstalled one."""
    if allocator not in ALLOCATORS:
        raise SystemExit(f"--allocators: unknown {allocator!r} ({', '.join(ALLOCATORS)})")
    if ALLOCATORS[allocator] is None:
        return None
    found = ctypes.util.find_library(ALLOCATORS[allocator])
    if found is None:
        raise SystemExit(f"--allocators: {allocator} is not installed (lib"
                         f"{ALLOCATORS[allocator]}; e.g. apt install libtcmalloc-minimal4 "
                         "libjemalloc2)")
    return found


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    f, t = r["fishjax"], r.get("torch")
    return {"train_vs_torch": None if t is None else
            f["train_tokens_per_s"] / t["train_tokens_per_s"],
            "generation_vs_torch": None if t is None else
            f["generation"]["tokens_per_s"] / t["generation"]["tokens_per_s"],
            "fisher_vs_batched_grad": f["fisher_ex_per_s"] / f["batched_grad_ex_per_s"]}


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--gen_prompt", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--gen_tokens", type=int, default=32, help="new tokens per row")
    parser.add_argument("--allocators", default="system,tcmalloc",
                        help=f"comma-separated, of {', '.join(ALLOCATORS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--speed_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method_child", help=argparse.SUPPRESS)
    cli.add_json(parser)
    args = parser.parse_args(argv)
    if args.method_child:
        cli.print_child_result(method_memory(args.method_child, args.model))
        return
    if args.speed_child:
        cli.print_child_result(speed(args))
        return
    allocators = [a for a in args.allocators.split(",") if a]
    preloads = {a: preload_library(a) for a in allocators}  # fail before any work
    out: dict[str, Any] = {"settings": vars(args), "machine": machine(), "allocators": {}}
    child_args = [a for k, v in vars(args).items() if k in (
        "model", "batch", "seq_len", "steps", "threads", "gen_prompt", "gen_tokens")
        for a in (f"--{k}", str(v))]
    for allocator, preload in preloads.items():
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        if preload:
            env["LD_PRELOAD"] = preload
        proc = cli.run_module("benchmarks.speed.decoder", [*child_args, "--speed_child"],
                              env=env, capture_output=True, text=True, check=False)
        try:
            result = cli.child_result(proc.stdout)
        except cli.NoChildResult:
            raise SystemExit(f"allocator {allocator}: {proc.stderr[-2000:]}") from None
        result["ratios"] = ratios(result)
        out["allocators"][allocator] = result
        f = result["fishjax"]
        print(f"[{allocator}] train {f['train_tokens_per_s']:.1f} tokens/s; ratios "
              f"{result['ratios']}", file=sys.stderr, flush=True)
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
