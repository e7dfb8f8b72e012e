"""CPC's context network g (a masked, PixelCNN-like conv stack over the patch-feature grid) and its predictors.

Hénaff et al. 2019, "Data-Efficient Image Recognition with Contrastive Predictive Coding" (CPC v2), its
description of CPC and the pseudo-code of its appendix: the encoded patch grid z `[B, G, G, D]` goes through residual blocks

    1x1 conv -> ReLU -> 1x3 conv ("same" along the row) -> pad one row on top -> 2x1 conv ("valid")
    -> ReLU -> 1x1 conv back to D,   added to the block input,

five of them (256 hidden channels) and a final ReLU. The 2x1 conv after padding one row on top makes
output row i see input rows i - 1 and i only, so the context c[i, j] depends on z rows <= i and never on a
row below: the rows it will predict stay hidden. Each step k has its own linear map W_k, and
zhat[i + k, j] = W_k c[i, j] predicts z[i + k, j] (a 1x1 conv in the paper's pseudo-code).

Differences from the paper: `horizontal_kernel=1` drops the 1x3 conv (then c[i, j] also sees column j
only, the plainest reading of the block); the prediction maps have no bias by default (the paper's
1x1 convs have one; `use_bias=True` restores it); the paper's target projection of z (a 1x1 conv to 64
channels) and its emb_scale 0.1 on the predictions are left to the method (a `Dense` on z, and
`temperature` in `tfssl.losses.cpc`). Predicting in the other directions (bottom-up, left-right) is a
rotation of the grid before a second context network, also the method's business.
"""
import keras
from keras import ops


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="tfssl")
class CPCContextNetwork(keras.layers.Layer):
    """Masked residual conv stack: c = g(z) with c[:, i] a function of z[:, :i + 1] only.

    Args:
        num_blocks: residual blocks (5 in the paper).
        hidden_dim: channels inside a block (256 in the paper).
        horizontal_kernel: odd width of the row conv inside a block (3 in the paper's pseudo-code); 1
            leaves it out.
        output_relu: ReLU on the stack's output, as the paper's pseudo-code.

    Call:
        `g(z)` with z `[B, H, W, D]` (any H, W) returns c `[B, H, W, D]`.
    """

    def __init__(self, num_blocks=5, hidden_dim=256, horizontal_kernel=3, output_relu=True, **kwargs):
        super().__init__(**kwargs)
        self.num_blocks = _check_int("num_blocks", num_blocks, 1)
        self.hidden_dim = _check_int("hidden_dim", hidden_dim, 1)
        self.horizontal_kernel = _check_int("horizontal_kernel", horizontal_kernel, 1)
        if horizontal_kernel % 2 == 0:
            raise ValueError(f"horizontal_kernel must be odd (centred on column j), got {horizontal_kernel}")
        self.output_relu = bool(output_relu)
        self.reduce_convs, self.row_convs, self.causal_convs, self.expand_convs = [], [], [], []

    def build(self, input_shape):
        dim = int(input_shape[-1])
        conv = keras.layers.Conv2D
        for b in range(self.num_blocks):
            self.reduce_convs.append(conv(self.hidden_dim, 1, name=f"block{b}_reduce"))
            if self.horizontal_kernel > 1:
                self.row_convs.append(conv(self.hidden_dim, (1, self.horizontal_kernel), padding="same",
                                           name=f"block{b}_row"))
            # 'valid' over the one padded row on top: output row i reads input rows i - 1 and i.
            self.causal_convs.append(conv(self.hidden_dim, (2, 1), padding="valid", name=f"block{b}_causal"))
            self.expand_convs.append(conv(dim, 1, name=f"block{b}_expand"))
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_dim,)
        for b in range(self.num_blocks):
            self.reduce_convs[b].build(tuple(input_shape))
            if self.row_convs:
                self.row_convs[b].build(hidden_shape)
            self.causal_convs[b].build(hidden_shape)
            self.expand_convs[b].build(hidden_shape)
        self.built = True

    def call(self, z):
        c = z
        for b in range(self.num_blocks):
            h = ops.relu(self.reduce_convs[b](c))
            if self.row_convs:
                h = self.row_convs[b](h)
            h = ops.pad(h, [[0, 0], [1, 0], [0, 0], [0, 0]])
            h = ops.relu(self.causal_convs[b](h))
            c = c + self.expand_convs[b](h)
        return ops.relu(c) if self.output_relu else c

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":
            # Keras keeps layers held in lists out of TensorFlow's object graph: without this,
            # tf.train.Checkpoint would save none of the convs.
            for layer in self.reduce_convs + self.row_convs + self.causal_convs + self.expand_convs:
                children[layer.name] = layer
        return children

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_blocks=self.num_blocks, hidden_dim=self.hidden_dim,
                      horizontal_kernel=self.horizontal_kernel, output_relu=self.output_relu)
        return config


def check_steps(steps):
    """`steps` as a tuple of distinct integers >= 1 (prediction offsets k, in rows), or a one-line ValueError."""
    try:
        steps = tuple(steps)
    except TypeError:
        raise ValueError(f"steps must be a sequence of distinct integers >= 1, got {steps!r}") from None
    if not steps or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in steps) \
            or len(set(steps)) != len(steps):
        raise ValueError(f"steps must be a non-empty sequence of distinct integers >= 1 (rows ahead), got {steps!r}")
    return steps


@keras.saving.register_keras_serializable(package="tfssl")
class CPCPredictor(keras.layers.Layer):
    """One separate linear map W_k per prediction step k: zhat_k = W_k c, at every grid position.

    Not one map shared across steps (a known deviation of a popular port): each step owns its kernel.

    Args:
        steps: prediction offsets k >= 1 in rows, e.g. `range(1, 6)` (the paper predicts up to 5 rows
            ahead; its pseudo-code skips the nearest ones).
        output_dim: width of the predictions (that of the targets); None: the context's width.
        use_bias: give each map a bias (the paper's 1x1 convs have one).

    Call:
        `predictor(c)` with c `[B, H, W, C]` returns a list, one `[B, H, W, output_dim]` per step in
        `steps` order; entry n at row i predicts z at row i + steps[n] (rows i >= H - k predict nothing
        and `cpc_infonce_loss` ignores them).
    """

    def __init__(self, steps, output_dim=None, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.steps = check_steps(steps)
        if output_dim is not None:
            _check_int("output_dim", output_dim, 1)
        self.output_dim = output_dim
        self.use_bias = bool(use_bias)
        self.step_maps = []

    def build(self, input_shape):
        width = self.output_dim or int(input_shape[-1])
        for k in self.steps:
            layer = keras.layers.Dense(width, use_bias=self.use_bias, name=f"step{k}")
            layer.build(tuple(input_shape))
            self.step_maps.append(layer)
        self.built = True

    def call(self, c):
        return [layer(c) for layer in self.step_maps]

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":  # as above: list-held layers are invisible to tf.train.Checkpoint
            for layer in self.step_maps:
                children[layer.name] = layer
        return children

    def compute_output_shape(self, input_shape):
        width = self.output_dim or input_shape[-1]
        return [tuple(input_shape[:-1]) + (width,) for _ in self.steps]

    def get_config(self):
        config = super().get_config()
        config.update(steps=list(self.steps), output_dim=self.output_dim, use_bias=self.use_bias)
        return config
