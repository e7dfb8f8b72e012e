"""The DINO projection head: an MLP, L2 normalisation, then a weight-normalised K-way layer.

Caron et al. "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, sec. 3.1 and
appendix (the reference `DINOHead` of vision_transformer.py). The last layer is weight-normalised
(Salimans & Kingma 2016): W = g * v / ||v||, each output unit's norm taken over the bottleneck axis.
"""
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfssl")
class DINOHead(keras.layers.Layer):
    """`h -> logits`: Dense -> [BN] -> GELU, ..., Dense(bottleneck), L2-normalise, weight-normed Dense(K).

    With `num_layers = L` the MLP has L Dense layers (L - 1 of width `hidden_dim`, each followed by an
    optional batch norm and an exact erf GELU, then one of width `bottleneck_dim`); `num_layers=1` is a
    single Dense to the bottleneck. MLP kernels start truncated normal (std 0.02), biases zero. The last
    layer has no bias; its direction v `[bottleneck_dim, output_dim]` starts uniform in +-1/sqrt(
    bottleneck_dim) (PyTorch's Linear default, which the reference keeps) and its gain g `[output_dim]`
    starts at 1 and stays fixed at 1 when `norm_last_layer` (the paper's default for stability).

    Args:
      output_dim: K, the number of output dimensions ("prototypes"); 65536 in the paper.
      hidden_dim: width of the hidden layers.
      bottleneck_dim: width of the MLP output, L2-normalised before the last layer.
      num_layers: number of Dense layers in the MLP, >= 1.
      use_bn: batch norm after each hidden Dense (before its GELU).
      norm_last_layer: fix g to 1 (not trainable), so every column of W has norm 1.

    Call:
      `head(h, training)` with `h` `[B, D]` returns `[B, output_dim]` logits in the compute dtype.
    """

    def __init__(self, output_dim=65536, hidden_dim=2048, bottleneck_dim=256, num_layers=3, use_bn=False,
                 norm_last_layer=True, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("output_dim", output_dim), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DINOHead {name} must be an integer >= 1, got {value!r}")
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.num_layers = num_layers
        self.use_bn = bool(use_bn)
        self.norm_last_layer = bool(norm_last_layer)
        widths = [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        # Sub-layers share this layer's dtype policy, so DINOHead(dtype="mixed_bfloat16") is mixed throughout.
        self.dense_layers = [
            keras.layers.Dense(width, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                               bias_initializer="zeros", dtype=self.dtype_policy, name=f"dense{i}")
            for i, width in enumerate(widths)]
        self.bn_layers = [
            keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=self.dtype_policy, name=f"bn{i}")
            for i in range(num_layers - 1)] if self.use_bn else []

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, dense in enumerate(self.dense_layers):
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
            if self.use_bn and i < self.num_layers - 1:
                self.bn_layers[i].build(shape)
        bound = 1.0 / math.sqrt(self.bottleneck_dim)
        # autocast=False: W is formed from the float32 variables, then cast to the compute dtype.
        self.last_layer_v = self.add_weight(
            shape=(self.bottleneck_dim, self.output_dim), name="last_layer_v", autocast=False,
            initializer=keras.initializers.RandomUniform(-bound, bound))
        self.last_layer_g = self.add_weight(shape=(self.output_dim,), name="last_layer_g", initializer="ones",
                                            trainable=not self.norm_last_layer, autocast=False)
        self.built = True

    @property
    def last_layer_variables(self):
        """Trainable variables of the last layer: `[v]`, plus `g` unless `norm_last_layer`.

        DINO freezes these during the first epoch (`freeze_last_layer=1`): drop their gradients then.
        """
        return [v for v in (self.last_layer_v, self.last_layer_g) if v.trainable]

    def last_layer_kernel(self):
        """The effective float32 weight W = g * v / ||v|| `[bottleneck_dim, output_dim]`."""
        v = ops.cast(self.last_layer_v, "float32")
        g = ops.cast(self.last_layer_g, "float32")
        return v * (g / ops.sqrt(ops.sum(ops.square(v), axis=0)))[None, :]

    def call(self, h, training=None):
        x = h
        for i, dense in enumerate(self.dense_layers):
            x = dense(x)
            if i < self.num_layers - 1:
                if self.use_bn:
                    x = self.bn_layers[i](x, training=training)
                x = keras.activations.gelu(x, approximate=False)  # torch nn.GELU's default (erf) form
        x = ops.normalize(x, axis=-1, order=2, epsilon=1e-12)
        return ops.matmul(x, ops.cast(self.last_layer_kernel(), x.dtype))

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":
            # Keras keeps layers held in lists out of TensorFlow's object graph: without this,
            # tf.train.Checkpoint would miss the MLP and batch-norm weights.
            for layer in self.dense_layers + self.bn_layers:
                children[layer.name] = layer
        return children

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, hidden_dim=self.hidden_dim, bottleneck_dim=self.bottleneck_dim,
                      num_layers=self.num_layers, use_bn=self.use_bn, norm_last_layer=self.norm_last_layer)
        return config
