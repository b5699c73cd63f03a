"""fedpers.privacy: the leaf package.

Differential-privacy mechanisms and accountants (:mod:`.dp`), CKKS secure aggregation
(:mod:`.secagg`), consent purposes (:mod:`.consent`) and the audit report model
(:mod:`.audit`). Every error fedpers raises on purpose is in :mod:`.errors`. Nothing here
imports flwr, fastapi or sqlite.
"""
