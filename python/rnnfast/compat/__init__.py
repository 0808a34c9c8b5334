"""Drop-in compatibility layers for code written against other RNN APIs.

`rnnfast.compat.cs231n`: the cs231n RNN captioning assignment's layer functions and CaptioningRNN.
(The PyTorch drop-in is `rnnfast.torch`.) Submodules are imported on demand, not here.
"""
