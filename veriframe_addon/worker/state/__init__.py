"""What survives a restart: the journal of finished and reported jobs, the per-job stage records, and
the clean-up of old job folders.

Plain files with atomic writes; imports nothing else of the worker.
"""
