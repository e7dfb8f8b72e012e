"""View recipes: any number of crops of any sizes, all made from one seed per batch.

A `ViewRecipe` is a list of `CropGroup`s, each `count` crops made by one per-image pipeline (a
`SimCLRAugment` / `BYOLAugment`, which holds the crop size, the crop-area range and the ops):

    SimCLR   ViewRecipe([CropGroup(SimCLRAugment(28), 2)])
    BYOL     ViewRecipe([CropGroup(BYOLAugment(28, blur_prob=1.0)), CropGroup(BYOLAugment(28, blur_prob=0.1,
                                                                                    solarize_prob=0.2))])
    SwAV     ViewRecipe([CropGroup(SimCLRAugment(224, crop_area=(0.14, 1)), 2),
                         CropGroup(SimCLRAugment(96, crop_area=(0.05, 0.14)), 6)])   (Caron et al. 2020)

Seeds are derived here and nowhere else: a batch's seed is `batch_seed(seed, epoch, batch)` and view v of
that batch uses `view_seed(batch seed, v)`, so no two views of any two batches share a seed (for fewer
than `MAX_VIEWS` views and 1,000,003 epochs per run seed), on the host (tf.data) and on the device alike.
"""
import tensorflow as tf

# Views per batch that `view_seed` keeps apart (SwAV / DINO use up to 12).
MAX_VIEWS = 256
# Epochs per run seed that `batch_seed` keeps apart.
_EPOCHS_PER_SEED = 1_000_003


def epoch_seed(seed, epoch):
    """The seed of one epoch (its shuffle order and its batches' views): distinct per (seed, epoch)."""
    return int(seed) * _EPOCHS_PER_SEED + int(epoch)


def batch_seed(seed, epoch, batch):
    """int64 `[2]` seed of batch `batch` (a scalar tensor or int) of epoch `epoch` of a run seeded `seed`."""
    return tf.stack([tf.constant(epoch_seed(seed, epoch), tf.int64), tf.cast(batch, tf.int64)])


def view_seed(seed, view):
    """int64 `[2]` seed of view `view` (python int < MAX_VIEWS) of the batch whose seed is `seed` `[2]`."""
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed[0], seed[1] * MAX_VIEWS + view])


class CropGroup:
    """`count` views of one per-image pipeline (one crop size, one scale range, one op sequence).

    Args:
        recipe: `recipe(images, seed) -> [B, S, S, 3]` with an `image_size` S (e.g. `SimCLRAugment`).
        count: number of views >= 1 this group makes.
    """

    def __init__(self, recipe, count=1):
        if not callable(recipe) or not hasattr(recipe, "image_size"):
            raise ValueError(f"a crop group needs a view recipe callable(images, seed) with an image_size, "
                             f"got {recipe!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"a crop group's count must be an integer >= 1, got {count!r}")
        self.recipe, self.count = recipe, count

    @property
    def size(self):
        return self.recipe.image_size

    def __repr__(self):
        return f"CropGroup({self.recipe!r}, count={self.count})"


class ViewRecipe:
    """All views of a batch: the crop groups in order, view indices counted across groups.

    Args:
        groups: `CropGroup`s (a bare recipe counts as one view).
    """

    def __init__(self, groups):
        groups = [g if isinstance(g, CropGroup) else CropGroup(g) for g in groups]
        if not groups:
            raise ValueError("a view recipe needs at least one crop group")
        self.groups = groups
        if self.num_views > MAX_VIEWS:
            raise ValueError(f"a view recipe makes at most {MAX_VIEWS} views, got {self.num_views}")

    @property
    def num_views(self):
        return sum(g.count for g in self.groups)

    @property
    def sizes(self):
        """Crop side of every view, in view order."""
        return [g.size for g in self.groups for _ in range(g.count)]

    @property
    def image_size(self):
        """The side of the first (largest, by convention) views."""
        return self.groups[0].size

    def same_size_runs(self):
        """`[(start, stop)]` view ranges of equal crop size, in order (one encoder call each)."""
        runs, sizes = [], self.sizes
        for v, size in enumerate(sizes):
            if runs and sizes[runs[-1][0]] == size:
                runs[-1] = (runs[-1][0], v + 1)
            else:
                runs.append((v, v + 1))
        return runs

    def recipe_of(self, view):
        """The per-image pipeline making view `view`."""
        for group in self.groups:
            if view < group.count:
                return group.recipe
            view -= group.count
        raise ValueError(f"view index {view} is out of range for a recipe of {self.num_views} views")

    def __call__(self, images, seed):
        """Every view of `images` `[B, H, W, C]`: a tuple of `num_views` float32 `[B, S_v, S_v, 3]`.

        Args:
            images: uint8 or float32 images in [0, 1].
            seed: the batch's `[2]` seed (`batch_seed`).
        """
        return tuple(self.recipe_of(v)(images, view_seed(seed, v)) for v in range(self.num_views))

    def get_config(self):
        from tfssl.augment.views import serialize_augment

        return {"groups": [{"count": g.count, "recipe": serialize_augment(g.recipe)} for g in self.groups]}

    @classmethod
    def from_config(cls, config):
        from tfssl.augment.views import deserialize_augment

        return cls([CropGroup(deserialize_augment(g["recipe"]), g["count"]) for g in config["groups"]])

    def __repr__(self):
        return f"ViewRecipe({self.groups!r})"


def as_view_recipe(augment, num_views=2):
    """A `ViewRecipe` from a recipe, a `ViewPair` (one group per view) or one per-image pipeline (`num_views`
    views of it); None stays None. Lets runs and `.keras` files saved before view recipes load."""
    from tfssl.augment.views import ViewPair

    if augment is None or isinstance(augment, ViewRecipe):
        return augment
    if isinstance(augment, ViewPair):
        return ViewRecipe([CropGroup(recipe) for recipe in augment.recipes])
    return ViewRecipe([CropGroup(augment, num_views)])
