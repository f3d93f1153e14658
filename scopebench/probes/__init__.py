"""Linear probes of the paper's supplement section C: classification, segmentation, depth.

Import the parts from their modules (``probes.config`` holds only pydantic models, so configs are
read without importing torch; ``classification``, ``segmentation``, ``depth`` train the probes).
"""
