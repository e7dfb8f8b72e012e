"""Encoders on crops of any size: the same layers (and weights) behind an input of unknown height and width.

Encoders are built for one image size, and that size stays their declared input: exports, fine-tuning
and evaluation read it. Multi-crop methods (SwAV, DINO) also encode smaller crops; `any_size(encoder)`
gives them a functional twin over the *same layer objects* whose input is `[B, None, None, C]`, so its
outputs are exactly the encoder's and its gradients land on the encoder's variables. ResNets pool
globally; the ViT recomputes its fixed sin-cos positions for the crop's patch grid (exact, no
interpolation: its positions are a function, not a learned table).
"""
import weakref

import keras

_TWINS = weakref.WeakKeyDictionary()


def any_size(encoder):
    """`encoder` itself if it already takes any spatial size, else its cached any-size twin.

    Args:
      encoder: a functional `keras.Model` with one `[B, S, S, C]` input.

    Returns:
      A `keras.Model` sharing every layer with `encoder`; not tracked by the method (its variables are
      the encoder's), so checkpoints and saved models are unchanged.
    """
    shape = tuple(encoder.input.shape)
    if shape[1] is None and shape[2] is None:
        return encoder
    if encoder not in _TWINS:
        inputs = keras.Input(shape=(None, None, shape[3]), dtype=encoder.input.dtype, name=encoder.input.name)
        _TWINS[encoder] = keras.models.clone_model(encoder, input_tensors=inputs, clone_function=lambda layer: layer)
    return _TWINS[encoder]
