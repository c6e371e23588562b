"""medmt5: continued pretraining, fine-tuning and ProMoT for mT5 in JAX/Flax."""
import glob
import os

from setuptools import find_packages, setup


def _gin_data_files():
    out = {}
    for path in glob.glob("gin/**/*.gin", recursive=True):
        out.setdefault(os.path.join("share", "medmt5", os.path.dirname(path)), []).append(path)
    return sorted(out.items())

# Ranges here; exact pins live in requirements*.txt, which `make` installs.
INSTALL_REQUIRES = [
    "jax>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "gin-config>=0.5,<0.6",
    "numpy>=1.26",
    "safetensors>=0.6",
    "sentencepiece>=0.2",
    "tqdm>=4.66",
    "tensorboard>=2.20",
    "matplotlib>=3.8",
]
DATA_REQUIRES = [  # the seqio/TensorFlow side (tasks/, medmt5/data.py)
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "clu==0.0.12",
    "rouge-score>=0.1.2",
    "sacrebleu>=2.4",
    "seqeval>=1.2.2",
    "pyarrow>=15",
]

setup(
    name="medmt5",
    version="0.1.0",
    description="Medical mT5 continued pretraining, fine-tuning and ProMoT in JAX/Flax",
    packages=find_packages(include=["medmt5*", "prompt_tuning*", "tasks*"]),
    package_data={"tasks": ["data/**/*"], "medmt5.model": ["csrc/*.cc"]},
    include_package_data=True,
    # gin/ sits at the top of the repo (users edit it); installed copies go to
    # <prefix>/share/medmt5/gin, which medmt5.cli.gin_utils always searches.
    data_files=_gin_data_files(),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES + DATA_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-timeout", "transformers>=4.40", "torch", "peft"],
        "gpu": ["jax[cuda12]>=0.10,<0.11"],
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        "core": [],  # model + trainer only: install with --no-deps and INSTALL_REQUIRES
        # gs:// without TensorFlow (etils.epath's fsspec backend); hub ids (medmt5.data.hub)
        "gcs": ["gcsfs>=2024.2"],
        "hub": ["huggingface_hub>=0.30"],
    },
    entry_points={
        "console_scripts": [
            "medmt5-train=medmt5.cli.train:console_main",
            "medmt5-eval=medmt5.cli.eval:console_main",
            "medmt5-infer=medmt5.cli.infer:console_main",
            "medmt5-check-data=medmt5.cli.check_data:console_main",
            "medmt5-convert=medmt5.cli.convert:console_main",
        ]
    },
)
