"""agents/cli"""
