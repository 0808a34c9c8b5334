"""Applications built on rnnfast: a character-level language model and image captioning.

What it is: the models, their data (the default text corpus, the built-in shapes scenes, a cs231n-layout
HDF5 loader), BLEU, and the training-step speed comparison. What it is not: layers or training machinery
(rnnfast.nn, rnnfast.topologies, rnnfast.train). Submodules import on use: `from rnnfast.models import
char_lm`.
"""
__all__ = ["char_lm", "captioning", "shapes", "cnn", "bleu", "coco_h5", "speed"]
