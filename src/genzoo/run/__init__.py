"""What every entry point shares: the run folder and its files, the process set-up, the loggers, and reading and
writing checkpoints. Nothing here imports an entry point (``genzoo.train``, ``eval``, ``sample``, ``report``)."""
