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


def graph_forward_flops(model, image_shape):
    """Floating-point ops of one inference call on one image, counted by TensorFlow's graph profiler.

    Unlike `layer_forward_flops` this needs no static layer shapes, so it counts models whose inputs take
    any size and models that cut an image into patches and encode each one (CPC v2's representation).
    Besides convolutions and matmuls it counts bias adds, normalisations and pooling.

    Args:
      model: a Keras model taking images `[B, H, W, C]`.
      image_shape: `(H, W, C)` of the image to trace.

    Returns:
      int FLOPs of one forward pass for one image.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, *image_shape], tf.float32)
    concrete = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)  # the profiler counts ops of a constant graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)
