"""The files of a run directory, by name: what ``training`` writes and ``results`` reads."""

CHECKPOINT_NAME = "checkpoint.pth"  # everything needed to continue the run
BEST_POLICY_NAME = "policy_best.pth"  # the algorithm state of the best evaluation
LAST_POLICY_NAME = "policy_last.pth"  # the algorithm state at the end
SUMMARY_NAME = "summary.json"  # arguments, final and best evaluation, per-epoch history
WATCH_SUMMARY_NAME = "watch.json"  # what --watch evaluated (never read as a training run)
