"""Run-time safety: what keeps a run from wasting an accelerator or corrupting MODEL_DIR.

    preflight   checks of a run's settings before anything expensive starts
    nonfinite   the policy for a NaN/Inf loss or gradient (stop or skip)
    preemption  SIGTERM: save at the current step and exit 0
    watchdog    end a process that stopped making progress (a peer died)
    failures    how a CLI process ends after a failure (named culprit, no hang)
"""
