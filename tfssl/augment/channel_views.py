"""CMC's channel-split views: one image -> two groups of channels, each a view for its own encoder.

Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020 (arXiv 1906.05849), sec. 4.2: an
RGB image in CIE Lab is split into its lightness L (1 channel) and its colour ab (2 channels), each
normalised with the authors' mean / std (the Lab gamut's centre and half-range, HobbitLong/CMC).

"lab"                 L (1 ch) and ab (2 ch) of the sRGB (D65) image.
"luminance_gradient"  for grayscale data, where ab is zero everywhere: L (1 ch) and the Sobel gradient
                      (d/dx, d/dy; 2 ch) of L / 100. The gradient view keeps the edges and drops the
                      absolute intensity and its low frequencies; L keeps them, so the two views share
                      the shape (what the encoders must agree on) and differ in the rest, as CMC's depth
                      and surface-normal views of NYU-Depth do (sec. 4.3).
"""
import keras
import tensorflow as tf

CHANNEL_VIEWS = ("lab", "luminance_gradient")

# sRGB (D65) -> CIE XYZ (IEC 61966-2-1) and the D65 reference white.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.950456, 1.0, 1.088754)
# CMC's normalisation: the centre and half-range of L in [0, 100], a in [-86.183, 98.233], b in [-107.857, 94.478].
LAB_MEAN = (50.0, (98.233 - 86.183) / 2, (94.478 - 107.857) / 2)
LAB_STD = (50.0, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2)
# Scale of the Sobel responses of L / 100 on Fashion-MNIST (std 1.01 for d/dx, 0.76 for d/dy over 2000
# train images), so that the gradient view has about unit scale like the normalised L view.
GRADIENT_STD = 0.9


def rgb_to_lab(images):
    """CIE Lab of sRGB images.

    Args:
      images: float `[..., 3]` sRGB in [0, 1].

    Returns:
      float32 `[..., 3]`: L in [0, 100], a, b (white -> (100, 0, 0)).
    """
    rgb = tf.cast(images, tf.float32)
    linear = tf.where(rgb > 0.04045, tf.pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4), rgb / 12.92)
    xyz = tf.tensordot(linear, tf.constant(_RGB_TO_XYZ, tf.float32), axes=[[-1], [1]])
    t = xyz / tf.constant(_WHITE_D65, tf.float32)
    delta = 6.0 / 29.0
    f = tf.where(t > delta ** 3, tf.pow(tf.maximum(t, delta ** 3), 1.0 / 3.0), t / (3 * delta ** 2) + 4.0 / 29.0)
    fx, fy, fz = tf.unstack(f, axis=-1)
    return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_views(images):
    """CMC's L and ab views of RGB images `[B, H, W, 3]` in [0, 1]: `([B, H, W, 1], [B, H, W, 2])`, normalised."""
    lab = (rgb_to_lab(images) - tf.constant(LAB_MEAN)) / tf.constant(LAB_STD)
    return lab[..., :1], lab[..., 1:]


def luminance_gradient_views(images):
    """L and its Sobel gradient, for grayscale images (`[B, H, W, 3]` in [0, 1], channels equal, or RGB).

    Returns:
      `(l, gradient)`: `[B, H, W, 1]` L normalised as in `lab_views`, and `[B, H, W, 2]` the Sobel
      responses (d/dx, d/dy, reflect-padded borders) of L / 100, divided by `GRADIENT_STD`.
    """
    lightness = rgb_to_lab(images)[..., :1]
    sobel = tf.image.sobel_edges(lightness / 100.0)[..., 0, :]  # [B, H, W, 2]: (d/dy, d/dx)
    gradient = tf.stack([sobel[..., 1], sobel[..., 0]], axis=-1) / GRADIENT_STD
    return (lightness - LAB_MEAN[0]) / LAB_STD[0], gradient


@keras.saving.register_keras_serializable(package="tfssl")
class ChannelViews(keras.layers.Layer):
    """Splits RGB images `[B, H, W, 3]` in [0, 1] into CMC's two views: `[view1 (1 ch), view2 (2 ch)]`.

    Computed in float32 whatever the dtype policy (Lab's powers lose too much in bfloat16).

    Args:
      views: "lab" or "luminance_gradient" (see the module docstring).
    """

    def __init__(self, views="lab", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if views not in CHANNEL_VIEWS:
            raise ValueError(f"unknown CMC views {views!r}; choose one of {', '.join(CHANNEL_VIEWS)}")
        self.views = views

    def call(self, images):
        split = lab_views if self.views == "lab" else luminance_gradient_views
        return list(split(images))

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (1,), tuple(input_shape[:-1]) + (2,)]

    def get_config(self):
        config = super().get_config()
        config.update(views=self.views)
        config.pop("dtype", None)  # always float32
        return config
