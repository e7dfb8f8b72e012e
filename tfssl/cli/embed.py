"""tfssl-embed: embeddings of a folder of images or a dataset split with an exported encoder.

  tfssl-embed --encoder=exports/a --images=photos/ --output=photos.npy
  tfssl-embed --encoder=exports/a --images=fashion_mnist:test --output=fm_test.tfrecord

Writes <output> (npy [N, D] or TFRecord), <output>.index.tsv (npy: row, key, label) and
<output>.manifest.json (count, dim, skipped files). Unreadable images are skipped and reported.
Interrupted? Run the same command again: finished shards in <output>.parts/ are kept.
"""
from absl import flags

import tfssl.cli  # noqa: F401
from tfssl.cli._common import run_main

flags.DEFINE_string("encoder", "", "Exported encoder: tfssl-export model dir or version dir.")
flags.DEFINE_string("images", "", "Image folder (recursive), fashion_mnist:SPLIT or tfds:NAME:SPLIT "
                    "(split grammar of tfssl.data, e.g. fashion_mnist:test[:64]).")
flags.DEFINE_string("output", "", "Embeddings file to write (index/manifest files go beside it).")
flags.DEFINE_integer("batch_size", 256, "Images per encoder call.")
flags.DEFINE_string("format", "", "npy or tfrecord (default: tfrecord for *.tfrecord outputs, else npy).")
flags.DEFINE_string("data_dir", None, "fashion_mnist IDX folder or TFDS data directory (dataset sources).")
flags.DEFINE_integer("shard_batches", 16, "Batches per resumable shard written to <output>.parts/.")
flags.DEFINE_bool("overwrite", False, "Recompute even if <output> exists, is complete or was started "
                  "with other flags.")
FLAGS = flags.FLAGS


def main(_):
    from tfssl.embed import embed_images

    try:
        result = embed_images(FLAGS.encoder, FLAGS.images, FLAGS.output, batch_size=FLAGS.batch_size,
                              output_format=FLAGS.format or None, data_dir=FLAGS.data_dir,
                              overwrite=FLAGS.overwrite, shard_batches=FLAGS.shard_batches)
    except KeyboardInterrupt:
        print(f"\ntfssl-embed: interrupted; run the same command again to resume from {FLAGS.output}.parts/")
        raise
    if result["status"] == "complete":
        files = ", ".join(result["files"].values())
        print(f"Wrote {result['count']} embeddings of dimension {result['dim']} ({result['format']}): "
              f"{files}; manifest {result['paths']['manifest']}")
        if result["skipped_count"]:
            print(f"Skipped {result['skipped_count']} unreadable file(s), listed in the manifest")


def run():
    run_main("tfssl-embed", main)


if __name__ == "__main__":
    run()
