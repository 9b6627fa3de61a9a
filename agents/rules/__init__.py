"""agents/rules"""
