"""prune_env/envs"""
