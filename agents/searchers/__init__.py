"""agents/searchers"""
