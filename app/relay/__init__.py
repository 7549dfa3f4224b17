"""The relay library: talk to an OpenAI-format upstream and transform its stream.

No Flask, no models, no billing here: inputs are plain values and dataclasses.
"""
