"""Soft prompts, ProMoT stages, in-context evaluation and prompt export.

  prompts         Prompt, PromptedTransformer (mT5 with a soft prompt in front)
  initializers    uniform / vocabulary / class-label / text / .npy prompt initialisers
  stages          the two ProMoT stages as medmt5.train arguments (gin/promot/*.gin; no seqio)
  prompt_init     prompt_initializer: a stage's initialiser by name (backbone + vocabulary)
  recipe          the same stages as plain Python; Scorer
  best_metric     the keep-best metric of a stage (task kind default, BEST_METRIC check)
  configurables   their gin registrations (imported by the gin files)
  inference       decoding with the prompt attached or removed; multi-task prompt tables
  evaluate        `python -m prompt_tuning.evaluate` (gin/promot/icl_eval.gin)
  export          `python -m prompt_tuning.export` (.npy, PEFT adapter)
See docs/promot.md.
"""
