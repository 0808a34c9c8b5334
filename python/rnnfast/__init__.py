"""rnnfast: fused RNN kernels (C++ CPU, optional CUDA) behind a NumPy-first API.

The public surface only; see rnnfast.functional for arrays, rnnfast.nn for layers, rnnfast.reference
for the NumPy specification.
"""
from . import functional, reference
from .backends import available, backends, set_num_threads
from .functional import rnn_backward, rnn_forward
from .nn import RNN, Embedding, Linear, Module, OneHotRNN, TemporalAffine, mse, softmax_cross_entropy
from .nn import GRU, LSTM
from .functional import gru_backward, gru_forward, lstm_backward, lstm_forward
from . import topologies, train
from .topologies import ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq
from .train import (SGD, Adagrad, Adam, RMSprop, Trainer, TrainingDiverged, clip_grad_norm, clip_grad_value,
                    load_checkpoint, plot_history, sample_logits, save_checkpoint)

from ._info import version as _version

__version__ = _version()


def info() -> dict:
    """Version, backends (with the reason any is missing), BLAS, CPU features and threads."""
    from ._info import collect
    return collect()


__all__ = ["RNN", "LSTM", "GRU", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "rnn_forward", "rnn_backward", "backends", "available", "set_num_threads", "functional", "reference", "info",
           "__version__",
           "Module", "Embedding", "OneHotRNN", "Linear", "TemporalAffine", "softmax_cross_entropy", "mse",
           "topologies", "OneToOne", "OneToMany", "ManyToOne", "ManyToMany", "Seq2Seq",
           "train", "SGD", "Adagrad", "RMSprop", "Adam", "clip_grad_value", "clip_grad_norm", "sample_logits",
           "Trainer", "TrainingDiverged", "save_checkpoint", "load_checkpoint", "plot_history"]
