"""prune_env/compression"""
