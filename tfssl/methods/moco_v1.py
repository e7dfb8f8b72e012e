"""MoCo v1's options: the MoCo class of `tfssl/methods/moco.py` with a linear head, temperature 0.07 and the
InstDis augmentation (He et al., CVPR 2020)."""
import dataclasses

from tfssl.heads import ProjectionHead
from tfssl.methods.moco import MoCoV2Options
from tfssl.methods.registry import option


@dataclasses.dataclass
class MoCoV1Options(MoCoV2Options):
    """MoCo v1's options: a linear head, temperature 0.07, the InstDis augmentation."""

    NAME = "moco_v1"
    ARCHITECTURE = ("proj_dim", "queue_size")

    temperature: float = option(0.07, "InfoNCE temperature (v1: 0.07).")
    proj_layers: int = option(1, "Head depth: v1 is one linear layer (only 1 is accepted).")
    proj_hidden_dim: int = option(0, "Unused by v1 (one linear layer).")

    def validate(self, train, num_replicas=1):
        super().validate(train, num_replicas)
        self.check_range("proj_layers", 1, 1)

    def augment(self, train):
        """Crops of 20-100% area, colour jitter always, grayscale p 0.2, no blur (v1 / InstDis recipe; hue
        range is the SimCLR recipe's 0.2 * s)."""
        from tfssl.augment import SimCLRAugment

        return SimCLRAugment(train.image_size, color_jitter_strength=train.color_jitter_strength, blur=False,
                             crop_area=(0.2, 1.0), jitter_prob=1.0)

    def head(self):
        return ProjectionHead(num_layers=1, output_dim=self.proj_dim, use_bn=False, name="projector")

    @classmethod
    def from_legacy(cls, flat):
        # Older runs stored the flat --proj_layers (default 2), which v1's one-layer head always ignored.
        return dataclasses.replace(super().from_legacy(flat), proj_layers=1, proj_hidden_dim=0)
