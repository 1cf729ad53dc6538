"""The tune stage: container contract, training backends and Optuna sweeps."""
