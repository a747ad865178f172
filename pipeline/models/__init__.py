"""Models, one file each. A checkpoint names its model by `model_arch`; `ARCHS` maps that name to the file that
builds it from the stored config (`build_from_dict`). The module paths are written out, not derived from the name,
so that the stage engine, which reads module names in the source, puts the model files into the cache keys of the
stages that load checkpoints. Which family trains which arch: pipeline/tasks/__init__.py."""

ARCHS = {
    "mlp": "pipeline.models.mlp",
    "ctc_rnn": "pipeline.models.ctc_rnn",
    "las": "pipeline.models.las",
    "transformer": "pipeline.models.transformer",
}
