"""ClusterUCB Studio's engine: gradient features, clusters, and a UCB bandit over them.

Never imports streamlit: the app, the CLI and a `torchrun` job all drive the same modules.
"""

__version__ = "0.1.0"
