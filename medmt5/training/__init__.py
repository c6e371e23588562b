"""The numerical core of training: pure step functions and what they are built from.

    trainer       StepConfig, loss_fn / grads / apply, train_step, eval_step, their jit
    train_state   TrainState and its sharded creation
    optimizers    Adafactor (T5X's), AdamW, schedules, freezing by a trainable mask
    losses        cross entropy with z-loss and label smoothing, the vocabulary-chunked loss
    partitioning  the ("data", "model") mesh, logical-axis rules, global batches
"""
from medmt5.training.optimizers import Optimizer, create_optimizer, trainable_mask
from medmt5.training.train_state import TrainState, create_train_state
from medmt5.training.trainer import StepConfig, eval_step, train_step

__all__ = ["Optimizer", "create_optimizer", "trainable_mask", "TrainState",
           "create_train_state", "StepConfig", "eval_step", "train_step"]
