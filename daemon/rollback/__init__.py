"""Selective rollback: the state every record would have if the excluded events had never
been written and every other event had.

- ``filters``: which events are excluded (``ExcludeFilter``, every criterion given must match);
- ``base``: the newest snapshot that folded no excluded event, and the log after it (pure
  choice: ``choose_base``; I/O: ``find_base``);
- ``fold``: one walk of that log: every key's current winner, and for the keys an excluded
  event touched, the winner without the excluded events; both catalogs;
- ``corrections``: per affected key, current and rolled-back state compared by content hash:
  the corrective events (catalog changes, then record upserts and deletes) and the report;
- ``report``: what changes per collection and tenant (``--dry-run`` prints it).

The full rolled-back state (restore sinks) is the restore executor over the same base with
the excluded events skipped where the log is folded (``RestorePlan.skip``)."""
