"""Job records: one object under ``jobs/<kind>/`` for every compaction, prune, restore, drill,
verify and index run (``record``: the object and its key; ``run``: how a job records itself;
``scrub``: the command line without its secrets; ``watch``: the job metrics of `vecwal run`)."""
