"""streaming/jobs"""
