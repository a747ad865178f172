"""Training loops. hw3p2: `train_ctc` (CTC over CTCRNN), `load_model`, `launch_ddp` for torchrun."""
from pipeline.training.checkpoints import load_model
from pipeline.training.ctc_trainer import CTCTrainConfig, train_ctc

__all__ = ["CTCTrainConfig", "train_ctc", "load_model", "launch_ddp"]


def launch_ddp(job: dict, nproc: int) -> dict:  # lazy: keeps subprocess plumbing out of plain imports
    from pipeline.training.ddp_worker import launch_ddp as _launch

    return _launch(job, nproc)
