"""agents/policies"""
