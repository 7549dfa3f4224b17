"""English and Chinese for the pages (Flask-Babel).

Catalogs live as .po files beside the code (app/translations for the storefront, and any other
folders listed in I18N_CATALOG_DIRS); they are compiled to .mo on start when missing or stale, so
a fresh checkout needs no build step.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, request
from flask_babel import Babel

from config import BASE_DIR

babel = Babel()

CATALOG_DIRS = ("app/translations", "app/admin/translations")
LANG_COOKIE = "lang"


def select_locale() -> str:
    supported = ("en", "zh")
    chosen = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in supported:
        return chosen
    return request.accept_languages.best_match(supported) or "en"


def compile_catalogs(directories: list[Path]) -> None:
    for directory in directories:
        for po_path in directory.glob("*/LC_MESSAGES/*.po"):
            mo_path = po_path.with_suffix(".mo")
            if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
                continue
            with po_path.open("rb") as po_file:
                catalog = read_po(po_file)
            with mo_path.open("wb") as mo_file:
                write_mo(mo_file, catalog)


def init_app(app: Flask) -> None:
    directories = [BASE_DIR / d for d in CATALOG_DIRS if (BASE_DIR / d).is_dir()]
    compile_catalogs(directories)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(str(d) for d in directories) or "translations"
    babel.init_app(app, locale_selector=select_locale)
