"""Models, one file each (a checkpoint names its file by `model_arch`: pipeline/models/load.py)."""
