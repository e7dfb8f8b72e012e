"""`tfssl-train` as a test worker: the same CLI, and at the end its model's and optimizer's variables are
written to the .npz file named by $TFSSL_TEST_DUMP (this process' own copy, read back by the test).
$TFSSL_TEST_LOGICAL_CPUS=N splits the CPU into N logical devices first (for --strategy=mirrored)."""
import os
import sys

import numpy as np


def main():
    cpus = int(os.environ.get("TFSSL_TEST_LOGICAL_CPUS", "1"))
    if cpus > 1:  # one process with several replicas (--strategy=mirrored), for comparison
        import tensorflow as tf

        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * cpus)
    import tfssl.cli.train as train_cli
    import tfssl.training as training

    built = {}
    build_training, pretrain = training.build_training, training.pretrain

    def spying_build(*args, **kwargs):
        model, schedule = build_training(*args, **kwargs)
        built["model"] = model
        return model, schedule

    def dumping_pretrain(config, verbose=1):
        result = pretrain(config, verbose)
        model = built["model"]
        variables = list(model.weights) + list(model.optimizer.variables)
        np.savez(os.environ["TFSSL_TEST_DUMP"], **{f"{i:04d} {v.path}": np.asarray(v.numpy())
                                                   for i, v in enumerate(variables)})
        return result

    training.build_training, training.pretrain = spying_build, dumping_pretrain
    sys.argv[0] = "tfssl-train"
    train_cli.run()


if __name__ == "__main__":
    main()
