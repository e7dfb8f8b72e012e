"""Checks that a head about to be exported really carries the weights of the run's checkpoint.

`restore_model` restores with `expect_partial()`, so a head that the checkpoint does not hold keeps
its fresh random initialisation without any error; exporting it would serve noise. Two ways that
happens: the head's variables are not reachable from the model by `tf.train.Checkpoint` (so they
were never saved), or the checkpoint was written by older code that did not save them.
"""
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def head_is_checkpointed(model, head):
    """True when every variable of `head` is reachable from `model` by `tf.train.Checkpoint`.

    Args:
      model: the method model (e.g. SimCLR).
      head: a layer of it (e.g. `model.projector`).
    """
    reachable = {id(obj) for obj in tf.train.TrackableView(model).descendants()}
    return all(id(variable) in reachable for variable in head.variables)


def checkpoint_variable_count(checkpoint_path, object_path):
    """Number of variables saved under `object_path` (e.g. ("model", "projector")) in a checkpoint.

    Read from the checkpoint's object graph, so a variable counts whichever path named its key.

    Args:
      checkpoint_path: checkpoint prefix (e.g. `<run>/checkpoints/ckpt-24`).
      object_path: attribute names from the checkpoint root down to the object.

    Returns:
      int, 0 when the object is absent.
    """
    reader = tf.train.load_checkpoint(checkpoint_path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    node_id = 0
    for name in object_path:
        children = {child.local_name: child.node_id for child in graph.nodes[node_id].children}
        if name not in children:
            return 0
        node_id = children[name]
    seen, stack, count = set(), [node_id], 0
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        node = graph.nodes[current]
        count += any(attr.name == "VARIABLE_VALUE" for attr in node.attributes)
        stack.extend(child.node_id for child in node.children)
    return count


def check_head_restored(model, head, checkpoint_path, attribute, what):
    """Raises ValueError (one line) unless `model.<attribute>` (= `head`) was restored from the checkpoint."""
    if not head_is_checkpointed(model, head):
        raise ValueError(f"{what}: the model does not save its {attribute} in checkpoints, so its weights "
                         "would be random; export without it")
    saved = checkpoint_variable_count(checkpoint_path, ("model", attribute))
    if saved < len(head.variables):
        raise ValueError(f"{what}: {checkpoint_path} holds {saved} of the {len(head.variables)} {attribute} "
                         "variables (written before heads were checkpointed?), so it would be random; "
                         "export without it")
