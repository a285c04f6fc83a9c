"""Running a model's real forward pass while watching it: the machinery under introspection and structure analysis.

- :mod:`.model_io`: feeding any model (tensors, tuples, dicts, token ids) and reading "the" output.
- :mod:`.generic_ops`: the swapped-in ops (F.linear/conv/attention/layer_norm ...) and their written-out tangents.
- :mod:`.forward_order`: the prunable calls in forward order (what :func:`prune_landscape.layers.final_layer_name` reads).
- :mod:`.recorder`: the interception mode that records every prunable call of a pass.
- :mod:`.generic_values`: generic weights and inputs on a shadow copy (the user's model is never touched).

Nothing here is imported on ``import prune_landscape.tracing``: each module is loaded by the one that needs it.
"""
