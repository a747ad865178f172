"""Decoding: CTC search (ctc.py and the modules it names), ctcdecode's API on our search (ctcdecode_api.py),
attention beam search, and metrics.

    from pipeline.decoding import CTCBeamDecoder      # a drop-in for `from ctcdecode import CTCBeamDecoder`

Imported lazily, so that `pipeline.decoding.metrics` stays torch-free.
"""


def __getattr__(name: str):
    if name == "CTCBeamDecoder":
        from pipeline.decoding.ctcdecode_api import CTCBeamDecoder

        return CTCBeamDecoder
    raise AttributeError(f"module 'pipeline.decoding' has no attribute {name!r}")
