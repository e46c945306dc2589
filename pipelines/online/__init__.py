"""pipelines/online"""
