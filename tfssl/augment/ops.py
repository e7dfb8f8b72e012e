"""All individual batched augmentation ops in one namespace (`tfssl.augment.ops.<op>`).

Every `random_*` op takes `(images [B, H, W, C], seed [2], ...)` and draws its parameters per
image with stateless RNG; every `adjust_*` / deterministic op takes explicit per-image parameters.
The implementations live in spatial.py, color.py and blur.py.
"""
from tfssl.augment.blur import blur_kernel_size, gaussian_blur, gaussian_kernels, random_gaussian_blur
from tfssl.augment.color import (
    JITTER_OPS,
    LUMA_WEIGHTS,
    adjust_brightness,
    apply_color_jitter,
    apply_color_jitter_by_select,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    jitter_ranges,
    luma,
    random_brightness,
    random_color_jitter,
    random_contrast,
    random_grayscale,
    random_hue,
    random_saturation,
    random_solarize,
    sample_jitter_params,
    solarize,
    to_grayscale,
)
from tfssl.augment.spatial import (
    crop_and_resize_boxes,
    crop_and_resize_by_gathers,
    flip_left_right,
    random_flip_left_right,
    random_resized_crop,
    sample_crop_boxes,
)

__all__ = [
    "JITTER_OPS",
    "LUMA_WEIGHTS",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_color_jitter",
    "apply_color_jitter_by_select",
    "blur_kernel_size",
    "crop_and_resize_boxes",
    "crop_and_resize_by_gathers",
    "flip_left_right",
    "gaussian_blur",
    "gaussian_kernels",
    "jitter_ranges",
    "luma",
    "random_brightness",
    "random_color_jitter",
    "random_contrast",
    "random_flip_left_right",
    "random_gaussian_blur",
    "random_grayscale",
    "random_hue",
    "random_resized_crop",
    "random_saturation",
    "random_solarize",
    "sample_crop_boxes",
    "sample_jitter_params",
    "solarize",
    "to_grayscale",
]
