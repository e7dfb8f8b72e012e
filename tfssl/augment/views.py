"""View recipes beyond SimCLR's: per-view probabilities (BYOL's asymmetric pair) and their serialisation.

A method makes its two views with `view_recipe(augment, 0)` and `view_recipe(augment, 1)`: a plain
recipe (`SimCLRAugment`) serves both views, a `ViewPair` gives each view its own recipe.

Reference: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, appendix B, table 6: blur with
probability 1.0 / 0.1 and solarisation with probability 0.0 / 0.2 for the first / second view.
"""
from tfssl.augment import _utils
from tfssl.augment.color import random_solarize
from tfssl.augment.patches import PatchGridAugment
from tfssl.augment.recipes import ViewRecipe
from tfssl.augment.simclr import SimCLRAugment, _fold_replica_id

# Salt of the solarize stage, after SimCLRAugment's five stages (whose draws it leaves unchanged).
_SOLARIZE = 5


class BYOLAugment(SimCLRAugment):
    """`SimCLRAugment` followed by random solarisation: crop, flip, jitter, gray, blur, solarize.

    Args:
        image_size: output side length S > 0.
        solarize_prob: probability in [0, 1] of solarising a view (threshold 0.5).
        **kwargs: every other `SimCLRAugment` argument (blur_prob, color_jitter_strength, ...).
    """

    def __init__(self, image_size, solarize_prob=0.0, **kwargs):
        super().__init__(image_size, **kwargs)
        self.solarize_prob = _utils.check_probability("solarize_prob", solarize_prob)

    def __call__(self, images, seed):
        """Like `SimCLRAugment.__call__`: float32 [B, S, S, 3] in [0, 1], per-image parameters."""
        views = super().__call__(images, seed)
        if self.solarize_prob > 0:
            seed = _fold_replica_id(_utils.as_seed(seed))
            views = random_solarize(views, _utils.fold_seed(seed, _SOLARIZE), self.solarize_prob)
        return views

    def get_config(self):
        return {**super().get_config(), "solarize_prob": self.solarize_prob}


class ViewPair:
    """Two view recipes, one per view (asymmetric augmentation).

    Args:
        first: recipe of view 1, `first(images, seed) -> views`.
        second: recipe of view 2.
    """

    def __init__(self, first, second):
        for name, recipe in (("first", first), ("second", second)):
            if not callable(recipe):
                raise ValueError(f"ViewPair {name} must be a view recipe callable(images, seed), got {recipe!r}")
        self.recipes = (first, second)

    @property
    def image_size(self):
        return self.recipes[0].image_size

    def view(self, index):
        """The recipe of view `index` (0 or 1)."""
        if index not in (0, 1):
            raise ValueError(f"view index must be 0 or 1, got {index!r}")
        return self.recipes[index]

    def __call__(self, images, seed):
        raise TypeError("a ViewPair has one recipe per view: call view_recipe(pair, index)(images, seed)")

    def get_config(self):
        return {"views": [serialize_augment(recipe) for recipe in self.recipes]}

    @classmethod
    def from_config(cls, config):
        return cls(*(deserialize_augment(recipe) for recipe in config["views"]))

    def __repr__(self):
        return f"ViewPair({self.recipes[0]!r}, {self.recipes[1]!r})"


RECIPES = {cls.__name__: cls for cls in (SimCLRAugment, BYOLAugment, ViewPair, ViewRecipe, PatchGridAugment)}


def view_recipe(augment, index):
    """The recipe making view `index` (0 or 1): `augment.view(index)` for a `ViewPair`, else `augment`."""
    return augment.view(index) if isinstance(augment, ViewPair) else augment


def byol_views(image_size, color_jitter_strength=1.0, blur=None, **kwargs):
    """BYOL's asymmetric pair: blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2 (other stages as SimCLR).

    Args:
        image_size: output side S.
        color_jitter_strength: SimCLR jitter strength s. (BYOL's table 6 uses brightness 0.4, contrast
            0.4, saturation 0.2, hue 0.1; s = 0.5 gives 0.4 / 0.4 / 0.4 / 0.1.)
        blur: blur on / off / None (auto: on iff image_size > 32, as for SimCLR on CIFAR).
        **kwargs: further `SimCLRAugment` arguments shared by both views.

    Returns:
        `ViewPair` of two `BYOLAugment`.
    """
    common = dict(color_jitter_strength=color_jitter_strength, blur=blur, **kwargs)
    return ViewPair(BYOLAugment(image_size, blur_prob=1.0, solarize_prob=0.0, **common),
                    BYOLAugment(image_size, blur_prob=0.1, solarize_prob=0.2, **common))


def serialize_augment(augment):
    """`{"class_name", "config"}` of a recipe in `RECIPES` (None stays None)."""
    if augment is None:
        return None
    name = type(augment).__name__
    if name not in RECIPES:
        raise ValueError(f"cannot serialise view recipe {name}; use one of {', '.join(sorted(RECIPES))}")
    return {"class_name": name, "config": augment.get_config()}


def deserialize_augment(config):
    """Inverse of `serialize_augment`; a bare `SimCLRAugment.get_config()` dict (older saves) also loads."""
    if config is None:
        return None
    if "class_name" not in config:
        return SimCLRAugment(**config)
    if config["class_name"] not in RECIPES:
        raise ValueError(f"unknown view recipe {config['class_name']!r}; expected one of {', '.join(sorted(RECIPES))}")
    return RECIPES[config["class_name"]].from_config(config["config"])


__all__ = ["BYOLAugment", "RECIPES", "ViewPair", "byol_views", "deserialize_augment", "serialize_augment",
           "view_recipe"]
