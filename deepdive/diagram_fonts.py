"""The one font diagrams are laid out and drawn with, shipped in deepdive/fonts/.

graphviz measures every label with fontconfig's fonts to size cards and place edges,
so a machine with other fonts installed (or another default sans-serif) would lay the
same snapshot out differently. `environ()` gives graphviz a fontconfig of our own that
lists only deepdive/fonts/ (DejaVu Sans, regular, bold and oblique; licence beside it):
no system font directory, alias or user configuration is read.

The glyphs rasterised with cairosvg hold no text (tests/test_diagram.py checks), so
cairo's own font choice never reaches a diagram.
"""
from __future__ import annotations

import os
from pathlib import Path

DIR = Path(__file__).parent / "fonts"
CONFIG = DIR / "fonts.conf"
FAMILY = "DejaVu Sans"
# What the SVGs name: the shipped font where a reader has it (most Linux desktops), else
# fonts no wider than it, so that text stays inside cards laid out for DejaVu Sans.
CSS_FAMILY = "DejaVu Sans,Arial,Helvetica,sans-serif"
# Variables through which the caller's environment could add fonts or configuration.
_FONTCONFIG_VARIABLES = ("FONTCONFIG_FILE", "FONTCONFIG_PATH", "FONTCONFIG_SYSROOT")


def environ() -> dict[str, str]:
    """This process's environment with fontconfig pointed at deepdive/fonts/fonts.conf
    only, for a graphviz subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in _FONTCONFIG_VARIABLES}
    env["FONTCONFIG_FILE"] = str(CONFIG)
    return env


def files() -> list[Path]:
    """The files that decide how text is measured and drawn: the configuration and the
    fonts, in a fixed order."""
    return [CONFIG, *sorted(DIR.glob("*.ttf"))]
