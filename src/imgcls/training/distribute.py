"""Multi-worker training (runtime.distribute: multi_worker) around two Keras 3.15 bugs.

Both patches touch Keras-private names (tests/test_keras_internals.py checks
they still exist) and only this model and this strategy.
"""

from __future__ import annotations


def work_around_multi_worker_bugs(model, info, dataset) -> None:
    """1. fit builds the model from a batch it averages with strategy.reduce, which this strategy
       rejects ("Attempt to convert a value (PerReplica...)"): build it from one local batch instead.
    2. Each step's logs (scalars) are averaged with strategy.reduce("MEAN", v, axis=0), which fails
       on a scalar ("Invalid reduction dimension 0"): reduce scalars with axis=None.
    """
    if info.distribute != "multi_worker":
        return
    strategy = info.strategy
    batch = next(iter(dataset))

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=batch)

    reduce = strategy.reduce

    def reduce_scalars_whole(reduce_op, value, axis=None):
        local = strategy.experimental_local_results(value)[0] if hasattr(value, "values") else value
        return reduce(reduce_op, value, axis=None if getattr(local.shape, "rank", None) == 0 else axis)

    model._maybe_symbolic_build = build
    strategy.reduce = reduce_scalars_whole
