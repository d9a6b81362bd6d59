"""samlab: a reproducible study of the Segment Anything Model family on medical images.

The package is deliberately thin: notebooks read like methods sections and call
into one module per concept (see DESIGN.md in the project documentation).
"""

__version__ = "0.1.0"
