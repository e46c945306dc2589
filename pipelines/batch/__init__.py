"""pipelines/batch"""
