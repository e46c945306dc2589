"""paramserver"""
