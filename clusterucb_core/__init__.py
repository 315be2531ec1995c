"""ClusterUCB Studio's engine: gradient features, clusters, and a UCB bandit over them.

Never imports streamlit: the app, the CLI and a `torchrun` job all drive the same modules.

On CUDA, PyTorch's allocator grows its segments in place (`expandable_segments:True`) unless
the user set PYTORCH_CUDA_ALLOC_CONF: batches of changing token counts otherwise fragment the
cache until a batch that fits in total memory fails. It is set here, before any module of the
package can initialise CUDA.
"""

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

__version__ = "0.1.0"
