"""Fixtures of the export tests: one tiny encoder (+ SimCLRv2-style head) and one export of it."""
import pytest

from export_helpers import IMAGE_SIZE, MODEL_NAME, randomise_batch_norm


@pytest.fixture(scope="session")
def tiny_model():
    """(encoder 16 px -> 64-d, 3-layer projection head keeping layer 1, output 8)."""
    import keras

    from tfssl.encoders import build_encoder
    from tfssl.heads import ProjectionHead

    keras.utils.set_random_seed(3)
    encoder = build_encoder("resnet18", IMAGE_SIZE, width_multiplier=0.125)
    head = ProjectionHead(num_layers=3, output_dim=8, keep_layer=1, name="projector")
    head.build((None, int(encoder.output.shape[-1])))
    assert randomise_batch_norm(encoder, 0) > 10 and randomise_batch_norm(head, 1) == 3
    return encoder, head


@pytest.fixture(scope="session")
def export_base(tmp_path_factory):
    return str(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def exported(tiny_model, export_base):
    """Version 1 of MODEL_NAME with projection, two stage endpoints and the kept head layer."""
    from tfssl.export import export_encoder

    encoder, head = tiny_model
    return export_encoder(encoder, export_base, IMAGE_SIZE, model_name=MODEL_NAME, projection=head,
                          endpoints={"block3": "block3", "block4": "block4", "kept_head": head.kept_output},
                          metadata={"note": "test"})


@pytest.fixture(scope="session")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(exported)
