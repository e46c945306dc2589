"""flywheel/stack"""
