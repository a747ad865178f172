"""Training: the one loop (loop.py), each family's task (ctc.py, frames.py, seq2seq.py), optimizers and schedules
(optim.py), batching, checkpoints, and the launcher for train stages and torchrun (launch.py)."""
