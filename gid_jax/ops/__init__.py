"""Operations the models, the renderer and the data pipeline share, below all of them (they import only
JAX, NumPy and :mod:`gid_jax.motion`-free maths): softmax splatting with its CPU kernels (:mod:`.splat`,
:mod:`.native`) and image pooling, resizing and hole filling (:mod:`.image`)."""
