"""Shared tiny artefacts for the fine-tuning tests (built once per session, each in a few seconds).

Everything is ResNet-18 at width 0.125 on 16 px Fashion-MNIST crops, so the whole directory stays
well under a minute on two CPU cores.
"""
import keras
import pytest

TINY_ENCODER = dict(encoder_name="resnet18", width_multiplier=0.125, image_size=16)
# Disjoint slices of the Fashion-MNIST train split (validation is carved out before slicing).
FINETUNE_SLICE = "train[:3000]"
TRANSFER_SLICE = "train[3000:4200]"
VAL = "validation[:200]"
TEST = "test[:300]"


@pytest.fixture(scope="session")
def tiny():
    """The shared slices and tiny-encoder settings, for the test modules."""
    return dict(finetune=FINETUNE_SLICE, transfer=TRANSFER_SLICE, val=VAL, test=TEST, encoder=dict(TINY_ENCODER))


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def simclr_run(tmp_path_factory):
    """A SimCLRv2-style run (3-layer head, fine-tune from layer 1) after two training steps."""
    from tfssl.config import TrainConfig
    from tfssl.training import pretrain

    model_dir = str(tmp_path_factory.mktemp("finetune_run") / "run")
    config = TrainConfig(model_dir=model_dir, dataset="fashion_mnist", train_split="train[:128]", image_size=16,
                         width_multiplier=0.125, batch_size=32, train_steps=2, log_every=1, warmup_epochs=0,
                         learning_rate=0.5, seed=3,
                         method_options={"proj_layers": 3, "keep_proj_layer": 1, "proj_dim": 8, "temperature": 0.5})
    pretrain(config, verbose=0)
    return model_dir


@pytest.fixture(scope="session")
def simclr_export(simclr_run, tmp_path_factory):
    """The run's encoder exported with tfssl.export (version dir)."""
    from tfssl.export import export_encoder
    from tfssl.training import restore_model

    model, config, _ = restore_model(simclr_run)
    base = tmp_path_factory.mktemp("finetune_export")
    return export_encoder(model.encoder, str(base), config.image_size, model_name="enc", warmup=False)


@pytest.fixture(scope="session")
def transfer_classifier(tmp_path_factory):
    """An informative encoder: a classifier fine-tuned with every label of a slice disjoint from the
    fine-tuning subset, validation and test (tfssl-finetune output dir: classifier.keras + result.json).
    """
    from tfssl.finetune import FineTuneConfig, fine_tune

    out = str(tmp_path_factory.mktemp("transfer"))
    config = FineTuneConfig(random_init=True, **TINY_ENCODER, train_split=TRANSFER_SLICE, val_split=VAL,
                            test_split=TEST, label_fraction=1.0, epochs=2, batch_size=64, learning_rate=0.1,
                            output_dir=out, seed=5)
    return out, fine_tune(config, verbose=0)
