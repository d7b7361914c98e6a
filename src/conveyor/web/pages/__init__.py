"""The dashboard's HTML pages, one module per concern; each exposes ``routes``.

A new page (workers, schedules, workflows) is a module here with its ``routes`` and a template,
listed in :data:`conveyor.web.app.PAGE_MODULES`.
"""
