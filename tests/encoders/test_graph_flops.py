"""graph_forward_flops against closed-form counts, including a model with unknown spatial input size."""
import keras

from tfssl.encoders.flops import graph_forward_flops, layer_forward_flops


def _conv_model(shape):
    inputs = keras.Input(shape)
    outputs = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    return keras.Model(inputs, outputs)


def test_conv_count_matches_closed_form_with_unknown_spatial_size():
    model = _conv_model((None, None, 3))
    assert graph_forward_flops(model, (16, 16, 3)) == 2 * 16 * 16 * 8 * 3 * 3 * 3
    assert graph_forward_flops(model, (8, 8, 3)) == 2 * 8 * 8 * 8 * 3 * 3 * 3  # scales with the traced size


def test_agrees_with_the_layer_count_on_a_static_model_and_counts_patches():
    static = _conv_model((16, 16, 3))
    assert graph_forward_flops(static, (16, 16, 3)) == layer_forward_flops(static)
    # An encoder applied to four 8x8 patches of a 16x16 image costs as much as the whole image.
    patch_encoder = _conv_model((None, None, 3))
    images = keras.Input((16, 16, 3))
    patches = keras.layers.Lambda(lambda x: keras.ops.concatenate(
        [x[:, :8, :8], x[:, :8, 8:], x[:, 8:, :8], x[:, 8:, 8:]], axis=0))(images)
    patched = keras.Model(images, patch_encoder(patches))
    assert graph_forward_flops(patched, (16, 16, 3)) == 4 * 2 * 8 * 8 * 8 * 3 * 3 * 3
