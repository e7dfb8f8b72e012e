"""Forward FLOPs of a Keras model, counted from its layers (for benchmarks and ablations)."""
import keras


def layer_forward_flops(model, batch=1):
    """Multiply-adds x2 of every Conv2D / Dense layer for `batch` images (BN, activations, pooling ignored).

    Args:
      model: a built Keras model with static layer output shapes (an encoder built for one image size).
      batch: images per call.

    Returns:
      int FLOPs of one forward pass.
    """
    flops = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            out_h, out_w, out_c = layer.output.shape[1:]
            k_h, k_w = layer.kernel_size
            in_c = layer.kernel.shape[2]
            flops += 2 * out_h * out_w * out_c * k_h * k_w * in_c
        elif isinstance(layer, keras.layers.Dense) and layer.built:
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops * batch
