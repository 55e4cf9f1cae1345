"""ntps: the Next Token Perception Score, its closed form, and the tools around it.

The package holds every computation of the companion book; the notebooks only narrate,
call and plot. See ``_config.yml`` for the book and ``README.md`` for the two commands.
"""

__version__ = "0.1.0"
