"""Data and files: the only part of medmt5 (with tasks/) that touches TensorFlow.

    pipeline      seqio tasks -> numpy batches with a resumable position (imports TensorFlow)
    batches       preprocessed examples -> the model's numpy features (no TensorFlow)
    vocab_record  the vocabulary identity stored with every checkpoint and prompt, checked
                  on load (reads vocabularies through tasks.vocab)
    paths         one path layer for local files, gs:// and other fsspec URLs
    hub           Hugging Face hub ids as checkpoint paths (offline cache aware)

Importing this package imports none of them, so `medmt5.data.paths` stays TensorFlow-free.
"""
