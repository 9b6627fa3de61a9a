"""prune_env/pruning"""
