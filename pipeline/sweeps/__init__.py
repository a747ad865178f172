"""`asrpipe sweep`: hyperparameter search over recipe keys. spec.py reads W&B sweep files and staged searches,
study.py runs them on Optuna (trials are ordinary cached pipeline runs), report.py tabulates and plots them and
writes the best recipe, wandb_backend.py hands the same file to a real W&B sweep."""
