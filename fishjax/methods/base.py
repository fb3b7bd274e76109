"""The method interface: what a fine-tuning method decides, and nothing else.

A method receives the pretrained parameters, a task loss and what it may need to know of
the run (`MethodContext`), and returns a `MethodSetup`: which tree is trained, which stays
frozen, how the two combine into the parameters the model reads, and how the optimizer is
wrapped (e.g. by a mask). The trainer loop never changes for a new method: it
differentiates only w.r.t. `trainable`, keeps optimizer state only for it, and passes
`frozen` through untouched (levanter/gemma style: trainable and frozen trees kept apart).

Each method also validates its own options (`validate(method_cfg)`, called by
`fishjax.train.validation.validate_config` before anything is loaded), so the config
check never needs to know a method's constants.

Method code sees parameter pytrees and a `loss_fn(params, batch)`, never the model class;
the context hands it the run's facts (task, model config, seed, batch size, learning rate)
so that it never reads the trainer's config sections.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import ml_collections
import optax

from fishjax.core.errors import ConfigError
from fishjax.core.tree import PyTree, count_params
from fishjax.data import TaskSpec, TokenizedSplit
from fishjax.models import ModelFamily
from fishjax.objectives import Objective

Batch = dict[str, Any]
LossFn = Callable[[PyTree, Batch], jax.Array]


@dataclasses.dataclass
class MethodContext:
    """Everything a method may use to decide what trains."""

    method: ml_collections.ConfigDict  # config.method: the method's options
    params: PyTree  # pretrained encoder + freshly initialised task head
    loss_fn: LossFn  # deterministic (dropout off) weighted-mean task loss of a batch
    # train_batches(batch_size, *, seed, epoch=0): the host batches of one epoch of the
    # training set, exactly as the trainer plans epoch `epoch` with shuffle seed `seed`
    # (seed None: file order, no shuffle); each batch has `weights` marking padding rows.
    train_batches: Callable[..., Iterator[Batch]]
    train_data: TokenizedSplit  # the training set, for index-level access
    task: TaskSpec  # the task (its name; label formats are the objective's)
    objective: Objective  # the task's targets: loss, metrics, expected Fisher, metadata
    model_config: Any  # the family's config (model_type, sizes; EncoderConfig for BERT)
    family: ModelFamily  # the model's registry entry: head regex, adapter sites
    model_name: str  # the base model as the config names it (recorded in artefact files)
    # What an exported PEFT adapter names as its base so that PEFT can load it: a Hub id
    # as given, or the absolute folder of an alias or local model (see
    # `fishjax.models.hub.peft_base_reference`).
    base_model_ref: str
    seed: int  # the run's seed (data order, Fisher samples, recorded in masks)
    batch_size: int  # the trainer's batch size
    learning_rate: float  # the trainer's peak learning rate
    # base_optimizer(total_steps): the trainer's optimizer (clipping + AdamW + warmup and
    # linear decay) for a run of `total_steps`, e.g. for short trial runs.
    base_optimizer: Callable[[int], optax.GradientTransformation]
    rng: jax.Array  # method-private PRNG key (e.g. random masks)
    workdir: str | None  # where a method may save its artefacts (masks, traces)
    # dev_score(params) -> the first eval split's main metric (higher is better) of a
    # dense params tree; only for selection rules that explicitly select on dev (IRD's
    # `final="best_dev"`). None where no dev set is at hand.
    dev_score: Callable[[PyTree], float] | None = None
    # The loss whose per-example gradients the Fisher passes square (None: loss_fn); a
    # decoder's with `method.fisher.token_reduction="sum"` sums each example's target-token
    # losses instead of averaging them.
    fisher_loss_fn: LossFn | None = None

    @property
    def fisher_loss(self) -> LossFn:
        return self.loss_fn if self.fisher_loss_fn is None else self.fisher_loss_fn


def _identity_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return tx


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One file (or folder) a method ships: how it is written and how it is read back.

    Every method's artefacts go through this one interface, so the trainer writes them and
    a test reloads them without knowing the method.
    """

    name: str  # its key in results["artifacts"] (e.g. "delta", "peft", "profile")
    save: Callable[[PyTree, str], str]  # (kept trainable tree, workdir) -> the written path
    # (path, the pretrained params) -> the dense model params the file ships, read back
    # from disk and checked against its base. None where the file alone makes no model
    # (e.g. the PEFT-library adapter folder, read by the `peft` package).
    load: Callable[[str, PyTree], PyTree] | None = None


@dataclasses.dataclass(frozen=True)
class ArtifactReader:
    """How a finished run's artefact file is read back without the run's `MethodSetup`
    (`fishjax.load` has only the workdir): `read(path, pretrained params, the run's
    config.method)` -> the dense params the file ships, checked against its base. Of a run
    with several, the file of the highest `rank` is loaded."""

    read: Callable[[str, PyTree, ml_collections.ConfigDict], PyTree]
    rank: int = 0


_READERS: dict[str, ArtifactReader] = {}


def register_artifact_reader(name: str, read: Callable[..., PyTree], rank: int = 0) -> None:
    """Registers the reader of the artefact a method ships under `name`
    (results["artifacts"][name]); one per name."""
    if name in _READERS:
        raise ValueError(f"artifact reader {name!r} registered twice")
    _READERS[name] = ArtifactReader(read, rank)


def artifact_reader(name: str) -> ArtifactReader | None:
    """The reader of artefact `name`, or None (e.g. the PEFT library's adapter folder)."""
    return _READERS.get(name)


@dataclasses.dataclass
class MethodSetup:
    """What a method hands the trainer."""

    trainable: PyTree  # differentiated and updated
    frozen: PyTree  # read-only during training
    combine: Callable[[PyTree, PyTree], PyTree]  # (trainable, frozen) -> model params
    # Wraps the base optimizer (AdamW + schedule + clipping), e.g. to mask its updates.
    wrap_optimizer: Callable[[optax.GradientTransformation], optax.GradientTransformation] = (
        _identity_optimizer
    )
    # The tree handed to the optimizer as `params` (what weight decay acts on). Default:
    # the trainable tree itself. A sparse increment returns the effective weights
    # W0[idx] + delta here, so decoupled weight decay acts on the weights, as in dense
    # training, while the optimizer still only sees O(k) entries.
    optimizer_params: Callable[[PyTree, PyTree], PyTree] | None = None
    # Extra regex over the paths of the optimizer's tree whose leaves never get weight
    # decay (on top of config.train.weight_decay_exclude); e.g. r"^delta/" for a sparse
    # increment trained without decay.
    no_decay: str | None = None
    # The files the method ships (a sparse delta, a PEFT file, a profile), written once by
    # the trainer at the end of a finished run from the trainable tree it keeps (the best
    # one if any); reported under results["artifacts"] as {name: path}.
    artifacts: tuple[Artifact, ...] = ()
    # Whether `dense_params` is a plain model params tree that the trainer can export as a
    # Hugging Face folder, the merged form every method may ship besides `artifacts`
    # (False e.g. for bottleneck adapters, which the base architecture lacks).
    exportable: bool = True
    # The dense params of what the method ships, when they differ from the trained model
    # (e.g. X-PEFT's soft scores hardened to a top-K mask at the end): the trainer scores
    # them on dev at the end of a finished run (results["deployed_eval"]).
    deployed: Callable[[PyTree], PyTree] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # logged and saved

    def save_artifacts(self, kept: PyTree, workdir: str) -> dict[str, str]:
        """Writes every artefact of `kept` (a trainable tree) into `workdir`: {name: path}."""
        return {a.name: a.save(kept, workdir) for a in self.artifacts}

    def dense_params(self, trainable: PyTree) -> PyTree:
        """Dense model parameters (for evaluation outside the step and for export)."""
        return self.combine(trainable, self.frozen)

    def summary(self) -> dict[str, Any]:
        return {
            "trainable_entries": count_params(self.trainable),
            "frozen_entries": count_params(self.frozen),
            **self.info,
        }


class Method(Protocol):
    """A fine-tuning method: `validate(method_cfg)` and `setup(ctx) -> MethodSetup`.

    `config_blocks` names the sections of `config.method` (e.g. "fisher", "sift") whose
    options it reads, besides the shared fields (the non-section ones: keep_ratio,
    head_regex, ...). It sees only those (`method_options`), and a resumed run compares only
    those: adding an option to another method's block never refuses an older workdir.
    """

    name: str
    config_blocks: tuple[str, ...]

    def validate(self, method_cfg: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming `config.method.<field>` for a bad option."""

    def setup(self, ctx: MethodContext) -> MethodSetup: ...


def inactive_blocks(method_cfg: ml_collections.ConfigDict, method: Method) -> list[str]:
    """The sections of `config.method` that `method` does not read."""
    own = getattr(method, "config_blocks", ())  # none declared: the shared fields only
    return sorted(k for k, v in method_cfg.items()
                  if isinstance(v, ml_collections.ConfigDict) and k not in own)


def method_options(method_cfg: ml_collections.ConfigDict,
                   method: Method) -> ml_collections.ConfigDict:
    """`config.method` as `method` sees it: the shared fields and its own blocks. Reading
    another block raises AttributeError, so a method cannot depend on options that a
    resume does not compare."""
    view = copy.deepcopy(method_cfg)
    with view.unlocked():
        for block in inactive_blocks(method_cfg, method):
            del view[block]
    return view


_REGISTRY: dict[str, Callable[[], Method]] = {}


def register(name: str, factory: Callable[[], Method]) -> None:
    """Registers `factory()` (a `Method`) under `name`; a name is registered once."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} registered twice")
    _REGISTRY[name] = factory


def register_method(name: str) -> Callable[[Callable[[], Method]], Callable[[], Method]]:
    """Class/factory decorator: `@register_method('fish') class Fish: ...`."""

    def deco(factory):
        register(name, factory)
        return factory

    return deco


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise ConfigError(f"config.method.name={name!r} is not a method; available: "
                          f"{', '.join(available_methods())}")
    return _REGISTRY[name]()
