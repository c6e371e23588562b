"""`import tasks.mt5`: the project's tasks registered with mT5's vocabulary
(mc4.250000.100extra, 250,100 ids; $MEDMT5_MT5_VOCAB or the public gs://t5-data copy), for
google/mt5-* and Medical mT5 checkpoints in notebooks and seqio tools. (The CLIs register
with --gin.VOCABULARY instead.)"""
import tasks

tasks.register(vocabulary="mt5")
