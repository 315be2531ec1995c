"""Streamlit glue for ClusterUCB Studio: the sidebar, errors, explanations, job widgets.

Pages stay thin: they read the workspace, call `clusterucb_core`, and render with the helpers
here. Nothing in this package computes anything the engine could.
"""
