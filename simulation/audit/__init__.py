"""The privacy audit of a run: ``report.json`` and ``report.html`` from a run directory.

``build`` assembles the report; ``sources`` reads the run; ``replication`` rebuilds its
data and configuration for the audit's own federations; ``sections`` and ``attacks``
(with ``crafted``) compute its sections; ``html`` renders the page.
"""
