"""Submissions that arrive by themselves: forms, spreadsheets, e-mail, review, reports.

Uses Domain, People and Store; Calendar, Planning and Channels never import this package.
The web console calls :func:`service.intake.core.intake_file` for uploads.
"""
