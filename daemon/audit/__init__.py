"""Audit: the history of one record (history.py), the difference between two moments
(diff.py), the id filter index that keeps history fast (idfilter.py), and how both are shown
(render.py)."""
