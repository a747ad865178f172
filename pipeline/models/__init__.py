"""Model families, one file each."""
from pipeline.models.ctc_rnn import CTCRNN, CTCRNNConfig, build_model, count_parameters

__all__ = ["CTCRNN", "CTCRNNConfig", "build_model", "count_parameters"]
