"""Build configuration that pyproject.toml cannot express: the optional C accelerator.

Everything else about the package is declared in pyproject.toml.  ``consentkit._speedups`` classifies
ASCII inbound replies; it is optional, so an install without a C compiler still succeeds and
``consentkit.keywords`` then runs its pure-Python code, which gives the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "consentkit._speedups",
            sources=["src/consentkit/_speedups.c"],
            optional=True,
        )
    ]
)
