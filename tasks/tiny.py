"""`import tasks.tiny`: the project's tasks registered with the shipped tiny vocabulary
(2,100 ids; gin/models/mt5_tiny.gin), e.g. as --gin.MIXTURE_OR_TASK_MODULE="'tasks.tiny'"."""
import tasks

tasks.register(vocabulary="tiny")
