"""Blinded human rating of model answers (the paper's 0–5 radiologist rating, Fig. 3b).

``radfm rate create`` builds a study folder from prediction files, ``radfm rate serve`` runs
the web app raters use, ``radfm rate export`` writes the CSV, Markdown summary and plot.
Modules: ``store`` (SQLite), ``study`` (building a study), ``images`` (slice rendering),
``views`` (what one rater sees), ``app`` (FastAPI routes), ``summary``/``export`` (results).
"""
