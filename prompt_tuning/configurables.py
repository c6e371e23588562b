"""gin registrations of the ProMoT pieces (the CLI layer; the library stays gin-free).

gin/promot/*.gin start with `import prompt_tuning.configurables`, which registers:
  prompted_model        model factory: train.model_factory = @prompted_model
  prompt_initializer    prompted_model.prompt_init = @prompt_initializer()
  required_checkpoint   CheckpointConfig.initial_checkpoint_path = @required_checkpoint() (stage 1)
  stage2_checkpoint     the same for stage 2 (also requires PROMPT_FILE)
  prompt_length_of      P read from PROMPT_FILE (stage 2)
  PromptWriter          CheckpointConfig.checkpoint_hooks = [@PromptWriter()]
  promot_evaluate       `python -m prompt_tuning.evaluate` (prompt attached / removed)
  best_metric_for       EvalConfig.best_metric = @best_metric_for(): the task kind's keep-best
                        metric, or BEST_METRIC checked against the task's metrics at start-up
  prompt_table_initializer, num_prompts_of, prompt_length_of_files
                        multi-task stage 2: the [N, P, H] table from PROMPT_FILES
"""
import gin
from prompt_tuning import evaluate, prompt_init, recipe, stages

prompted_model = gin.external_configurable(stages.prompted_model, name="prompted_model")
prompt_initializer = gin.external_configurable(prompt_init.prompt_initializer,
                                               name="prompt_initializer")
required_checkpoint = gin.external_configurable(stages.required_checkpoint,
                                                name="required_checkpoint")
stage2_checkpoint = gin.external_configurable(stages.stage2_checkpoint,
                                              name="stage2_checkpoint")
prompt_length_of = gin.external_configurable(stages.prompt_length_of, name="prompt_length_of")
PromptWriter = gin.external_configurable(stages.PromptWriter, name="PromptWriter")

promot_evaluate = gin.external_configurable(evaluate.promot_evaluate, name="promot_evaluate")
best_metric_for = gin.external_configurable(recipe.best_metric_for, name="best_metric_for")

# Multi-task ProMoT stage 2 (gin/promot/multitask_stage2.gin).
from prompt_tuning import multitask  # noqa: E402

prompt_table_initializer = gin.external_configurable(multitask.table_initializer,
                                                     name="prompt_table_initializer")
num_prompts_of = gin.external_configurable(multitask.num_prompts_of, name="num_prompts_of")
prompt_length_of_files = gin.external_configurable(multitask.prompt_length_of_files,
                                                   name="prompt_length_of_files")
