"""GLUE task registry: text columns, label sets, metrics and file layout of each task.

A :class:`TaskSpec` says everything the loader, the trainer and the metrics need about a
task. Label ids follow the order of ``label_names``, which is also the order the Hugging
Face ``nyu-mll/glue`` dataset uses, so TSV-loaded and hub-loaded data agree.

``main_metric`` is the single number used to pick the best checkpoint: the task's only
metric, or for the two-metric tasks (MRPC/QQP: F1 and accuracy; STS-B: Pearson and
Spearman) the unweighted mean of both, named ``f1_acc_mean`` / ``pearson_spearman_mean``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fishjax.core.errors import DataError

# Local split name -> split name in the ``nyu-mll/glue`` hub dataset.
_HUB_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one task.

    File layout: ``<split>.tsv`` in the task folder, tab-separated, no quoting. With
    ``columns=None`` the first line is a header and ``text_fields``/``label_field`` are
    looked up in it by name; otherwise the file has no header and ``columns`` names its
    fields by position (CoLA), so every row must have exactly ``len(columns)`` fields.
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    main_metric: str
    label_field: str = "label"
    columns: tuple[str, ...] | None = None
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("dev",)
    glue_folder: str | None = None
    hub_config: str | None = None
    hub_text_fields: tuple[str, ...] = field(default=())
    # A text-to-text task for causal LMs (`fishjax.data.generation`): `<split>.jsonl` rows
    # of a prompt and the target text, no label set.
    generative: bool = False

    def __post_init__(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise DataError(f"task {self.name!r}: text_fields must hold 1 or 2 names")
        if self.hub_config is not None and len(self.hub_text_fields) != len(self.text_fields):
            raise DataError(f"task {self.name!r}: hub_text_fields must match text_fields")

    @property
    def is_regression(self) -> bool:
        return self.label_names is None and not self.generative

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.train_split, *self.eval_splits)

    @property
    def has_header(self) -> bool:
        return self.columns is None

    def describe(self) -> str:
        """One line: labels, metrics and eval splits."""
        what = "text targets" if self.generative else f"{self.num_labels} labels"
        return (f"{what}, metrics {', '.join(self.metrics)}; "
                f"eval {', '.join(self.eval_splits)}")

    def hub_split(self, split: str) -> str:
        """The ``nyu-mll/glue`` split name for a local split name ('dev' -> 'validation')."""
        return _HUB_SPLITS[split]


def _spec(name: str, text_fields: tuple[str, ...], label_names: tuple[str, ...] | None,
          metrics: tuple[str, ...], glue_folder: str, hub_text_fields: tuple[str, ...],
          **kw) -> TaskSpec:
    main = metrics[0] if len(metrics) == 1 else kw.pop("main_metric")
    return TaskSpec(name=name, text_fields=text_fields, label_names=label_names,
                    metrics=metrics, main_metric=main, glue_folder=glue_folder,
                    hub_config=name, hub_text_fields=hub_text_fields, **kw)


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        _spec("cola", ("sentence",), _BIN, ("matthews",), "CoLA", ("sentence",),
              columns=("source", "label", "label_notes", "sentence")),
        _spec("sst2", ("sentence",), _BIN, ("accuracy",), "SST-2", ("sentence",)),
        _spec("mrpc", ("#1 String", "#2 String"), _BIN, ("f1", "accuracy"), "MRPC",
              ("sentence1", "sentence2"), label_field="Quality", main_metric="f1_acc_mean"),
        _spec("stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman"), "STS-B",
              ("sentence1", "sentence2"), label_field="score",
              main_metric="pearson_spearman_mean"),
        _spec("qqp", ("question1", "question2"), _BIN, ("f1", "accuracy"), "QQP",
              ("question1", "question2"), label_field="is_duplicate",
              main_metric="f1_acc_mean"),
        _spec("mnli", ("sentence1", "sentence2"), ("entailment", "neutral", "contradiction"),
              ("accuracy",), "MNLI", ("premise", "hypothesis"), label_field="gold_label",
              eval_splits=("dev_matched", "dev_mismatched")),
        _spec("qnli", ("question", "sentence"), _NLI2, ("accuracy",), "QNLI",
              ("question", "sentence")),
        _spec("rte", ("sentence1", "sentence2"), _NLI2, ("accuracy",), "RTE",
              ("sentence1", "sentence2")),
        _spec("wnli", ("sentence1", "sentence2"), _BIN, ("accuracy",), "WNLI",
              ("sentence1", "sentence2")),
        # Bundled sample (fishjax/data/samples, written by fishjax.data.make_samples).
        TaskSpec(name="quickstart", text_fields=("sentence",),
                 label_names=("negative", "positive"), metrics=("accuracy",),
                 main_metric="accuracy"),
        # Bundled sample of short instructions and answers, for causal LMs.
        TaskSpec(name="chat_quickstart", text_fields=("prompt", "completion"),
                 label_names=None, metrics=("token_accuracy",),
                 main_metric="token_accuracy", generative=True),
        # A mixture of instruction tasks described by config.data.instruct
        # (fishjax.data.instructions); its test rows stay out of training runs.
        TaskSpec(name="instruct", text_fields=("prompt", "completion"),
                 label_names=None, metrics=("token_accuracy",),
                 main_metric="token_accuracy", eval_splits=("validation",), generative=True),
    )
}

# Extra spellings. The MNLI matched/mismatched names all map to the one 'mnli' spec,
# whose eval_splits cover both dev sets.
_ALIASES = {
    "mnlim": "mnli",
    "mnlimm": "mnli",
    "mnlimatched": "mnli",
    "mnlimismatched": "mnli",
}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look up a task by name, ignoring case, dashes and underscores ('SST-2' -> sst2).

    'mnli-m'/'mnli-mm' (and 'mnli_matched'/'mnli_mismatched') return the 'mnli' spec,
    which evaluates on both dev_matched and dev_mismatched. A TaskSpec is returned as is.
    """
    if isinstance(name, TaskSpec):
        return name
    key = _normalize(str(name))
    key = _ALIASES.get(key, key)
    by_key = {_normalize(k): spec for k, spec in TASKS.items()}
    if key not in by_key:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return by_key[key]
