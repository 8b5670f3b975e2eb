"""microgpt_lib: the code every chapter of the microgpt course imports.

One module per idea: bench (measuring), data (names), autograd (Value), scalar_gpt,
layout, kernels, blas, device, optim, tensor, gpt, train. Modules are imported on demand:
``from microgpt_lib import bench`` pulls in only what the bench needs.
"""

__version__ = "0.1.0"
