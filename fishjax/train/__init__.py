"""The top layer under the CLI: the trainer that owns a run (`trainer.train_and_evaluate`),
its checkpoints, metric writer, mesh and sharding, base optimizer, data loading and the
config checks."""
