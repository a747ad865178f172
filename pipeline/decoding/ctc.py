"""CTC decoding: the public interface the decode stage uses.

    from pipeline.decoding.ctc import make_decoder, greedy_decode, prefix_beam_search, ctc_log_likelihood
    decoder = make_decoder("asrpipe", beam=20, blank=0, num_classes=41, workers=2)
    hypotheses = decoder.decode(log_probs, lengths)

Greedy and exact scoring live in ctc_greedy.py, our prefix beam search in ctc_beam.py, the backend adapters,
input checks and worker pool in ctc_backends.py, and a synthetic CTC-like data generator in ctc_synthetic.py.
"""
from pipeline.decoding.ctc_backends import (
    CTCDecoder,
    Decoder,
    available_backends,
    check_decoder_inputs,
    make_decoder,
)
from pipeline.decoding.ctc_beam import prefix_beam_search, prefix_beam_search_nbest
from pipeline.decoding.ctc_greedy import ctc_log_likelihood, greedy_decode

__all__ = [
    "CTCDecoder",
    "Decoder",
    "available_backends",
    "check_decoder_inputs",
    "ctc_log_likelihood",
    "greedy_decode",
    "make_decoder",
    "prefix_beam_search",
    "prefix_beam_search_nbest",
]
