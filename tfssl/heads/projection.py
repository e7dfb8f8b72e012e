"""Projection and prediction MLPs placed on top of the encoder during pre-training.

SimCLR v1 (Chen et al. 2020a) uses 2 layers; SimCLR v2 (Chen et al. 2020b, "Big Self-Supervised Models
are Strong Semi-Supervised Learners") uses 3 layers with batch norm and fine-tunes from a middle layer
of the head, which `keep_layer` selects. BYOL (Grill et al. 2020) ends its projector and predictor with
a plain Dense (`last_bn=False`); SimSiam (Chen & He 2021) keeps BN on the projector output and uses a
bottleneck predictor (`predictor_head`). The last BN never has a shift (a shift of z is irrelevant after
L2 normalisation); SimCLR's keeps a learnable scale, SimSiam's and MoCo v3's reference code have none
(`BatchNorm1d(affine=False)`: `last_bn_scale=False`).
"""
import keras


@keras.saving.register_keras_serializable(package="tfssl")
class ProjectionHead(keras.layers.Layer):
    """MLP `h -> z`: (Dense -> BN -> ReLU) x (num_layers - 1), then Dense -> BN (no ReLU; BN iff last_bn).

    Args:
      num_layers: number of Dense layers, >= 1.
      output_dim: width of the last layer (the space the loss compares in).
      hidden_dim: width of the hidden layers; None means the input width.
      use_bn: batch norm after every Dense (biases are then redundant and dropped).
      keep_layer: how many head layers the fine-tuning model keeps (SimCLRv2 selector): 0 = encoder
        output only, k = output of the k-th layer (after its BN/ReLU). Must be in [0, num_layers].
      sync_bn: synchronise batch-norm statistics across replicas.
      last_bn: batch norm after the last Dense too (SimCLR, SimSiam projector); False ends with a
        Dense with bias (BYOL projector and predictor, SimSiam predictor). Only used when use_bn.
      last_bn_scale: the last BN has a learnable scale gamma (SimCLR); False: no learnable parameter at
        all (SimSiam, MoCo v3). It never has a shift beta.

    Call:
      `head(h, training)` with `h` `[B, D]` returns `z` `[B, output_dim]`.
    """

    def __init__(self, num_layers=2, output_dim=128, hidden_dim=None, use_bn=True, keep_layer=0,
                 sync_bn=False, last_bn=True, last_bn_scale=True, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {num_layers}")
        if output_dim < 1:
            raise ValueError(f"proj_dim must be >= 1, got {output_dim}")
        if not 0 <= keep_layer <= num_layers:
            raise ValueError(f"keep_proj_layer must be between 0 and proj_layers={num_layers}, got {keep_layer}")
        self.num_layers = num_layers
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.use_bn = use_bn
        self.keep_layer = keep_layer
        self.sync_bn = sync_bn
        self.last_bn = bool(last_bn)
        self.last_bn_scale = bool(last_bn_scale)
        self.blocks = []

    def build(self, input_shape):
        width = self.hidden_dim or int(input_shape[-1])
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            bn = self.use_bn and (self.last_bn or not last)
            block = [keras.layers.Dense(self.output_dim if last else width, use_bias=not bn, name=f"dense{i}")]
            if bn:
                # The last BN has no beta: a shift of z is irrelevant after L2 normalisation.
                block.append(keras.layers.BatchNormalization(center=not last, scale=not last or self.last_bn_scale,
                                                             momentum=0.9, epsilon=1e-5,
                                                             synchronized=self.sync_bn, name=f"bn{i}"))
            if not last:
                block.append(keras.layers.ReLU(name=f"relu{i}"))
            self.blocks.append(block)
        shape = tuple(input_shape)
        for block in self.blocks:
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.built = True

    def layer_outputs(self, h, training=None):
        """Returns `[h, out_1, ..., out_L]`: the input and every layer's output."""
        outputs = [h]
        x = h
        for block in self.blocks:
            for layer in block:
                x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
            outputs.append(x)
        return outputs

    def call(self, h, training=None):
        return self.layer_outputs(h, training=training)[-1]

    def kept_output(self, h, training=None):
        """The representation SimCLRv2 fine-tunes from: output of layer `keep_layer` (0 = `h`)."""
        return self.layer_outputs(h, training=training)[self.keep_layer]

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":
            # Keras keeps `blocks` (a list of lists) out of TensorFlow's object graph, so without this
            # tf.train.Checkpoint would save only what the optimizer reaches (trainable weights): BN
            # moving statistics and every weight of a never-trained head (BYOL's target) would be lost.
            for i, block in enumerate(self.blocks):
                for layer in block:
                    children[f"block{i}_{layer.name}"] = layer
        return children

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, output_dim=self.output_dim, hidden_dim=self.hidden_dim,
                      use_bn=self.use_bn, keep_layer=self.keep_layer, sync_bn=self.sync_bn,
                      last_bn=self.last_bn, last_bn_scale=self.last_bn_scale)
        return config


def predictor_head(output_dim, hidden_dim, sync_bn=False, name="predictor", last_bn=False):
    """Prediction MLP q of BYOL / SimSiam / MoCo v3: Dense(hidden) -> BN -> ReLU -> Dense(output_dim).

    BYOL: hidden 4096, output 256 (= the projection size); SimSiam: a bottleneck, hidden 512 for
    output 2048 (Chen & He 2021, sec. 4.1). The last Dense has a bias, unless `last_bn` ends the head
    with a parameter-free BN instead (MoCo v3's ViT predictor, Chen, Xie, He 2021).

    Args:
      output_dim: output width; must equal the projection width the prediction is compared with.
      hidden_dim: hidden width, >= 1.
      sync_bn: synchronise batch-norm statistics across replicas.
      name: layer name.
      last_bn: end with a BN without scale or shift (no bias on the last Dense).

    Returns:
      A `ProjectionHead` (so it serialises like one).
    """
    if hidden_dim is None or hidden_dim < 1:
        raise ValueError(f"pred_hidden_dim must be >= 1, got {hidden_dim}")
    return ProjectionHead(num_layers=2, output_dim=output_dim, hidden_dim=hidden_dim, use_bn=True,
                          sync_bn=sync_bn, last_bn=last_bn, last_bn_scale=False, name=name)
